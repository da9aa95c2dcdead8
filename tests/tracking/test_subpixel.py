"""Refinement of a tracked frame against its map points' reference keyframes."""

from __future__ import annotations

import numpy as np
import pytest

from slam.camera import PinholeCamera
from slam.map.frame import Frame
from slam.map.map import Map
from slam.tracking.subpixel import MAX_GAIN, KeyframeImages, SubpixelRefiner
from tests.map.factories import (
    K_SMALL,
    SCALES,
    gt_T_cam_world,
    make_frame,
    make_keyframe,
    project,
    synthetic_calibration,
    synthetic_frame,
    synthetic_sensor_frame,
)


def _map_from_keyframe(index: int) -> tuple[Map, Frame]:
    """A map whose points are the depth keypoints of loop frame ``index`` (one keyframe,
    each point's reference), and that keyframe's frame."""
    slam_map = Map()
    frame = synthetic_frame("rgbd", index)
    frame.image = synthetic_sensor_frame("rgbd", index).image
    kf = make_keyframe(slam_map, frame, gt_T_cam_world(index))
    cam = synthetic_calibration("rgbd").camera
    for i in np.flatnonzero(frame.depth_m > 0):
        xyz_cam = cam.unproject(frame.uv[i:i + 1], frame.depth_m[i:i + 1])[0]
        xyz_world = kf.T_world_cam[:3, :3] @ xyz_cam + kf.T_world_cam[:3, 3]
        mp = slam_map.add_point(xyz_world, kf, int(i))
        slam_map.add_observation(mp.id, kf.id, int(i))
    return slam_map, frame


def _match_by_truth(slam_map: Map, frame: Frame, cam: PinholeCamera) -> None:
    """Associate each keypoint of ``frame`` with the map point projecting within 2 px."""
    pts = slam_map.point_arrays(np.array(sorted(slam_map.points), np.int64))
    assert frame.T_cam_world is not None
    uv, z = project(cam.K, frame.T_cam_world, pts.xyz_world)
    for i, p in enumerate(frame.uv):
        d = np.linalg.norm(uv - p, axis=1)
        j = int(np.argmin(np.where(z > 0, d, np.inf)))
        if d[j] < 2.0:
            frame.point_ids[i] = pts.ids[j]


def test_refinement_moves_matches_onto_the_true_projections() -> None:
    slam_map, _ = _map_from_keyframe(0)
    cam = synthetic_calibration("rgbd").camera
    cur = synthetic_frame("rgbd", 4)  # pose = ground truth
    _match_by_truth(slam_map, cur, cam)
    matched = np.flatnonzero(cur.point_ids >= 0)
    assert len(matched) > 50
    pts = slam_map.point_arrays(cur.point_ids[matched])
    assert cur.T_cam_world is not None
    truth, _ = project(cam.K, cur.T_cam_world, pts.xyz_world)
    before = np.linalg.norm(cur.uv[matched] - truth, axis=1)
    u_right_before = cur.u_right.copy()
    uv_before = cur.uv.copy()
    refiner = SubpixelRefiner(cam, SCALES, max_shift=1.5)
    moved = refiner.refine(cur, synthetic_sensor_frame("rgbd", 4).image, slam_map)
    assert len(moved) > 0.6 * len(matched)
    after = np.linalg.norm(cur.uv[matched] - truth, axis=1)
    is_moved = np.isin(matched, moved)
    assert np.median(after[is_moved]) < 0.3 * np.median(before[is_moved])
    # u_right moves with u (the disparity is kept); unmatched keypoints stay put
    du = cur.uv[moved, 0] - uv_before[moved, 0]
    has_right = u_right_before[moved] >= 0
    assert np.allclose(cur.u_right[moved][has_right], u_right_before[moved][has_right]
                       + du[has_right])
    unmatched = cur.point_ids < 0
    assert np.array_equal(cur.uv[unmatched], uv_before[unmatched])


@pytest.mark.parametrize(("noise_px", "expected_gain"), [(0.02, MAX_GAIN), (1.0, 1.0)])
def test_weigh_trusts_refined_keypoints_by_their_residuals(noise_px: float,
                                                          expected_gain: float) -> None:
    rng = np.random.default_rng(1)
    slam_map = Map()
    T = np.eye(4)
    xyz = np.c_[rng.uniform(-1, 1, (200, 2)), rng.uniform(2, 4, 200)]
    uv, _ = project(K_SMALL, T, xyz)
    ref = make_keyframe(slam_map, make_frame(uv), T)
    pids = []
    for i, p in enumerate(xyz):
        pids.append(slam_map.add_point(p, ref, i).id)
        slam_map.add_observation(pids[-1], ref.id, i)
    frame = make_frame(uv + rng.normal(0, noise_px, uv.shape), T_cam_world=T)
    frame.point_ids[:] = pids
    frame.point_ids[:10] = -1  # dropped as outliers: left as they were
    cam = PinholeCamera(K_SMALL[0, 0], K_SMALL[1, 1], K_SMALL[0, 2], K_SMALL[1, 2], 320, 240)
    gain = SubpixelRefiner(cam, SCALES, 1.5).weigh(frame, np.arange(200), slam_map)
    assert gain == pytest.approx(expected_gain, rel=0.05)
    assert np.allclose(frame.inv_sigma2[10:], gain)
    assert np.allclose(frame.inv_sigma2[:10], 1.0)


def test_keyframe_images_reuse_the_least_recently_used_slot() -> None:
    images = KeyframeImages(8, 6, capacity=2)
    frames = [make_frame(np.zeros((0, 2))) for _ in range(3)]
    for i, f in enumerate(frames):
        f.image = np.full((6, 8), i, np.uint8)
    colour = make_frame(np.zeros((0, 2)))
    colour.color = np.zeros((6, 8, 3), np.uint8)
    colour.color[..., 2] = 255  # red, BGR
    s = images.slots([0, 1], frames[:2])
    assert s is not None and sorted(s.tolist()) == [0, 1]
    images.slots([0], frames[:1])  # keyframe 1 is now the least recently used
    s2 = images.slots([2], frames[2:])
    assert s2 is not None and s2[0] == s[1]
    assert np.all(images.buffer[s2[0]] == 2)
    s3 = images.slots([3], [colour])
    assert s3 is not None and images.buffer[s3[0]].mean() == pytest.approx(76, abs=1)
    assert images.slots([0, 1, 2], frames) is None  # more than fit
    wrong = make_frame(np.zeros((0, 2)))
    wrong.image = np.zeros((5, 8), np.uint8)
    assert images.slots([9], [wrong]) is None


@pytest.mark.parametrize(("value", "mode"), [
    ("off", "off"), (False, "off"), ("false", "off"), (True, "all"), ("keyframes", "keyframes"),
    ("auto", "auto")])
def test_the_subpixel_setting_takes_switches_and_modes(value: object, mode: str) -> None:
    from slam.config import load_config

    assert load_config(overrides={"tracking.subpixel": value}).tracking.subpixel == mode


def test_keyframes_mode_refines_only_the_frames_that_become_keyframes() -> None:
    from slam.config import load_config
    from slam.system import SlamSystem
    from tests.map.factories import synthetic_source

    src = synthetic_source("rgbd")
    system = SlamSystem(load_config(overrides={"tracking.subpixel": "keyframes",
                                               "system.threads": False}),
                        src.calibration, "rgbd")  # type: ignore[arg-type]
    assert system.tracker.refiner is not None
    calls: list[int] = []
    refine = system.tracker.refiner.refine

    def counting(frame, image, slam_map):  # type: ignore[no-untyped-def]
        calls.append(frame.id)
        return refine(frame, image, slam_map)

    system.tracker.refiner.refine = counting  # type: ignore[method-assign]
    keyframe_ids = []
    for i in range(20):
        res = system.process(src.frame(i))
        if res.is_keyframe:
            keyframe_ids.append(res.frame_id)
    system.finish()
    assert calls and set(calls) <= set(keyframe_ids)
    assert len(calls) >= len(keyframe_ids) - 1  # all but the first (made by initialisation)


def test_auto_refines_every_frame_with_depth_and_keyframes_in_monocular() -> None:
    from slam.config import load_config

    cfg = load_config().tracking
    assert [cfg.subpixel_mode(s) for s in ("rgbd", "stereo", "mono")] == [
        "all", "all", "keyframes"]
    forced = load_config(overrides={"tracking.subpixel": "off"}).tracking
    assert forced.subpixel_mode("rgbd") == "off"

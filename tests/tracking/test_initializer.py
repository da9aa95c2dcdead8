"""Map points from depth: positions, ORB-SLAM's close/far rule, first keyframe."""

from __future__ import annotations

import numpy as np
import pytest

from slam.features.stereo import depth_from_image
from slam.geometry.lie import make_pose, se3_inv, so3_exp
from slam.map.map import Map
from slam.tracking.initializer import add_depth_points, initialize_from_depth
from tests.map.factories import (
    K_SMALL,
    gt_T_cam_world,
    make_frame,
    make_keyframe,
    project,
    synthetic_frame,
    synthetic_sensor_frame,
)

T_CW = make_pose(so3_exp(np.array([0.1, 0.2, -0.1])), np.array([0.5, -0.2, 1.0]))


def _kf_with_depths(depths: np.ndarray, seed: int = 0):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    uv = rng.uniform([0, 0], [320, 240], size=(len(depths), 2))
    m = Map()
    kf = make_keyframe(m, make_frame(uv, depth_m=depths, rng=rng), T_CW)
    return m, kf


def test_points_are_unprojected_depths_in_world() -> None:
    depths = np.array([2.0, -1.0, 3.5, 0.0, 1.2])
    m, kf = _kf_with_depths(depths)
    made = add_depth_points(m, kf, K_SMALL, max_close_depth=10.0)
    assert made == 3 and m.n_points() == 3
    uv = kf.frame.uv
    for i in (0, 2, 4):
        mp = m.points[int(kf.point_ids[i])]
        assert mp.observations == {kf.id: i}
        uv_back, z = project(K_SMALL, T_CW, mp.xyz_world[None])
        np.testing.assert_allclose(uv_back[0], uv[i], atol=1e-9)
        assert z[0] == pytest.approx(depths[i])
        np.testing.assert_allclose(np.linalg.norm(mp.normal), 1.0)
        assert mp.max_dist == pytest.approx(np.linalg.norm(mp.xyz_world - kf.center_world))
    assert kf.point_ids[1] == -1 and kf.point_ids[3] == -1


@pytest.mark.parametrize(("n_close", "expect"), [(10, 51), (60, 60)])
def test_all_close_points_then_far_ones_up_to_min_new(n_close: int, expect: int) -> None:
    rng = np.random.default_rng(1)
    depths = np.r_[rng.uniform(0.5, 2.9, n_close), rng.uniform(3.1, 8.0, 200)]
    m, kf = _kf_with_depths(rng.permutation(depths))
    made = add_depth_points(m, kf, K_SMALL, max_close_depth=3.0, min_new=50)
    assert made == expect
    used = kf.frame.depth_m[kf.point_ids >= 0]
    assert np.count_nonzero(used < 3.0) == n_close
    # Closest first: every far point used is nearer than every far point left out.
    unused = kf.frame.depth_m[(kf.point_ids < 0) & (kf.frame.depth_m > 0)]
    assert used.max() <= unused.min()


def test_existing_points_are_kept_and_counted() -> None:
    depths = np.linspace(1.0, 2.0, 10)
    m, kf = _kf_with_depths(depths)
    assert add_depth_points(m, kf, K_SMALL, max_close_depth=0.5, min_new=3) == 4
    first = kf.point_ids.copy()
    # Erase one: its keypoint slot is freed; a stale id is also replaced.
    m.erase_point(int(first[1]))
    kf.frame.point_ids[2] = 10_000
    made = add_depth_points(m, kf, K_SMALL, max_close_depth=0.5, min_new=3)
    assert made == 2
    assert kf.point_ids[0] == first[0] and kf.point_ids[3] == first[3]
    assert np.all(kf.point_ids[:4] >= 0) and np.all(kf.point_ids[4:] < 0)
    assert kf.point_ids[2] in m.points


def test_no_depth_no_points() -> None:
    m, kf = _kf_with_depths(np.full(5, -1.0))
    assert add_depth_points(m, kf, K_SMALL, 3.0) == 0 and m.n_points() == 0


def test_initialize_needs_500_depths() -> None:
    m = Map()
    f = make_frame(np.zeros((499, 2)) + 50.0, depth_m=np.full(499, 2.0))
    assert initialize_from_depth(m, f, K_SMALL, 3.0) is None
    assert m.n_keyframes() == 0


def test_initialize_from_synthetic_rgbd_frame() -> None:
    frame = synthetic_frame("rgbd", 3)
    m = Map()
    kf = initialize_from_depth(m, frame, K_SMALL, max_close_depth=4.0)
    assert kf is not None and kf.id == 0 and m.origin_kf_id == 0
    np.testing.assert_array_equal(kf.T_cam_world, np.eye(4))
    n_depth = int(np.count_nonzero(frame.depth_m > 0))
    assert m.n_points() == n_depth > 500
    assert np.count_nonzero(kf.point_ids >= 0) == n_depth
    # Check against another rendered view: points land on frame 4's surfaces.
    pts = m.point_arrays(kf.point_ids[kf.point_ids >= 0])
    T_4_3 = gt_T_cam_world(4) @ se3_inv(gt_T_cam_world(3))
    uv4, z4 = project(K_SMALL, T_4_3, pts.xyz_world)
    inside = (uv4[:, 0] >= 0) & (uv4[:, 0] < 319.5) & (uv4[:, 1] >= 0) & (uv4[:, 1] < 239.5)
    assert inside.mean() > 0.5
    depth4 = synthetic_sensor_frame("rgbd", 4).depth_m
    assert depth4 is not None
    rendered = depth_from_image(uv4[inside], depth4)
    err = np.abs(rendered - z4[inside])
    assert np.median(err) < 0.01
    assert np.mean(err < 0.05) > 0.85  # the rest: occlusion edges and keypoints on them

"""Splits, ground-truth interpolation, depth-based correspondences, stereo depth,
homographic pairs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from slam.camera import PinholeCamera
from slam.geometry.lie import make_pose, so3_exp
from slam.io.types import Trajectory
from slam.learn.data import (
    TEST,
    TRAIN,
    VAL,
    LearnFrame,
    SplitSpec,
    apply_homography,
    homography_pair,
    nearest_keypoints,
    pose_at,
    project_to,
    random_homography,
    stereo_depth,
)

CAM = PinholeCamera(500.0, 500.0, 320.0, 240.0, 640, 480)


def test_split_by_time_span() -> None:
    spans = SplitSpec(0.7, 0.1).of(100)
    assert (spans[:70] == TRAIN).all() and (spans[70:80] == VAL).all()
    assert (spans[80:] == TEST).all()
    with pytest.raises(ValueError):
        SplitSpec(0.9, 0.2)


def test_pose_at_interpolates_position_and_rotation() -> None:
    T0 = make_pose(np.eye(3), np.zeros(3))
    T1 = make_pose(so3_exp(np.array([0.0, 0.0, np.radians(20.0)])), np.array([1.0, 2.0, 0.0]))
    gt = Trajectory(np.array([10.0, 10.01]), np.stack([T0, T1]))
    T = pose_at(gt, 10.005)
    assert T is not None
    np.testing.assert_allclose(T[:3, 3], [0.5, 1.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(T[:3, :3], so3_exp(np.array([0, 0, np.radians(10.0)])),
                               atol=1e-9)
    exact = pose_at(gt, 10.01)
    assert exact is not None
    np.testing.assert_allclose(exact, T1)
    far = Trajectory(np.array([10.0, 10.5]), np.stack([T0, T1]))
    assert pose_at(far, 10.25) is None
    assert pose_at(gt, 9.0) is None


def _plane_frames(depth_b: float = 2.0) -> tuple[LearnFrame, LearnFrame]:
    img = np.zeros((480, 640), np.uint8)
    a = LearnFrame(0, 0.0, img, np.full((480, 640), 2.0, np.float32), np.eye(4))
    # B is 0.2 m to the right (world-from-camera translation +x)
    T_b = make_pose(np.eye(3), np.array([0.2, 0.0, 0.0]))
    b = LearnFrame(1, 0.1, img, np.full((480, 640), depth_b, np.float32), T_b)
    return a, b


def test_project_to_on_a_plane() -> None:
    a, b = _plane_frames()
    uv = np.array([[320.0, 240.0], [100.0, 50.0], [5.0, 240.0]])
    proj = project_to(CAM, uv, a, b)
    # a point at depth 2 m moves by -fx * 0.2 / 2 = -50 px in u
    np.testing.assert_allclose(proj.uv_raw_b[:2], uv[:2] + np.array([-50.0, 0.0]), atol=1e-6)
    assert proj.valid.tolist() == [True, True, False]  # the last leaves the image
    np.testing.assert_allclose(proj.xyz_world[0], [0.0, 0.0, 2.0], atol=1e-9)


def test_project_to_rejects_occluded_points_and_depth_edges() -> None:
    a, b = _plane_frames(depth_b=1.0)  # something in front in B
    assert not project_to(CAM, np.array([[320.0, 240.0]]), a, b).valid.any()
    a, b = _plane_frames()
    assert a.depth_m is not None
    a.depth_m[240, 321] = 3.0  # a depth edge next to the keypoint
    assert not project_to(CAM, np.array([[320.0, 240.0]]), a, b).valid.any()
    a.depth_m[:] = 0.0  # no depth
    assert not project_to(CAM, np.array([[100.0, 100.0]]), a, b).valid.any()


def test_nearest_keypoints_within_radius() -> None:
    kp = np.array([[10.0, 10.0], [50.0, 50.0]])
    q = np.array([[11.0, 10.5], [30.0, 30.0], [np.nan, np.nan], [49.0, 52.0]])
    assert nearest_keypoints(q, kp, 3.0).tolist() == [0, -1, -1, 1]


def test_stereo_depth_of_a_shifted_texture() -> None:
    rng = np.random.default_rng(3)
    tex = cv2.GaussianBlur(rng.uniform(0, 255, (120, 400)).astype(np.float32), (0, 0), 1.0)
    left = np.clip(tex, 0, 255).astype(np.uint8)
    disparity = 16
    right = np.roll(left, -disparity, axis=1)  # x_right = x_left - d
    depth = stereo_depth(left, right, bf=40.0, max_disp=64)
    inner = depth[20:-20, 100:-40]
    ok = inner > 0
    assert ok.mean() > 0.8
    np.testing.assert_allclose(np.median(inner[ok]), 40.0 / disparity, rtol=0.02)


def test_homography_pair_maps_pixels() -> None:
    rng = np.random.default_rng(0)
    H = random_homography(rng, 640, 480)
    corners = np.array([[0, 0], [640, 0], [640, 480], [0, 480]], np.float64)
    moved = apply_homography(H, corners)
    assert np.all(np.abs(moved - corners) < 400)
    img = np.zeros((480, 640), np.uint8)
    cv2.circle(img, (300, 200), 6, 255, -1)
    warped, H = homography_pair(img, np.random.default_rng(1))
    u, v = apply_homography(H, np.array([[300.0, 200.0]]))[0]
    assert warped[int(round(v)), int(round(u))] > 128

"""Pose-only optimisation against synthetic ground truth, OpenCV and finite differences."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from slam.errors import GeometryError
from slam.geometry import lie
from slam.optim import pose_only
from slam.optim.kernels import DELTA_MONO, huber_cost
from slam.optim.pose_only import optimize_pose

K = np.array([[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]])
BF = 0.12 * 500.0


def _scene(n: int, seed: int, stereo_frac: float = 0.0, noise: float = 1.0,
           outlier_frac: float = 0.2):
    rng = np.random.default_rng(seed)
    T_gt = lie.se3_exp(np.array([0.1, -0.2, 0.3, 0.05, -0.1, 0.02]))
    xyz_cam = np.c_[rng.uniform(-3, 3, n), rng.uniform(-2, 2, n), rng.uniform(2, 10, n)]
    xyz_world = lie.transform_points(lie.se3_inv(T_gt), xyz_cam)
    uv = xyz_cam[:, :2] / xyz_cam[:, 2:] * 500.0 + [320.0, 240.0]
    u_right = np.full(n, -1.0)
    stereo = rng.random(n) < stereo_frac
    u_right[stereo] = uv[stereo, 0] - BF / xyz_cam[stereo, 2]
    uv = uv + rng.normal(0, noise, (n, 2))
    u_right[stereo] += rng.normal(0, noise, stereo.sum())
    outlier = rng.random(n) < outlier_frac
    uv[outlier] += rng.choice([-1, 1], (outlier.sum(), 2)) * rng.uniform(15, 60, (outlier.sum(), 2))
    T0 = lie.se3_exp(np.array([0.08, 0.05, -0.1, 0.03, 0.02, -0.03])) @ T_gt
    return T_gt, T0, xyz_world, uv, u_right, outlier


def _pose_error(T: np.ndarray, T_gt: np.ndarray) -> tuple[float, float]:
    d = lie.se3_log(T @ lie.se3_inv(T_gt))
    return float(np.linalg.norm(d[:3])), float(np.linalg.norm(d[3:]))


@pytest.mark.parametrize("stereo_frac", [0.0, 0.5])
def test_noisy_with_outliers_recovers_pose_and_flags_outliers(stereo_frac: float) -> None:
    T_gt, T0, xyz, uv, ur, outlier = _scene(1000, 0, stereo_frac)
    T, inl = optimize_pose(T0, xyz, uv, np.ones(len(xyz)), K, ur, bf=BF)
    dt, dr = _pose_error(T, T_gt)
    assert dt < 5e-3 and dr < 1e-3
    assert not np.any(inl & outlier)  # every gross outlier is flagged
    assert inl[~outlier].mean() > 0.9  # ~95 % of the inliers pass the chi2 test
    # the initial pose was much worse
    assert _pose_error(T0, T_gt)[0] > 10 * dt


def test_exact_data_gives_exact_pose() -> None:
    T_gt, T0, xyz, uv, ur, _ = _scene(200, 1, stereo_frac=0.3, noise=0.0, outlier_frac=0.0)
    T, inl = optimize_pose(T0, xyz, uv, np.full(len(xyz), 0.5), K, ur, bf=BF)
    np.testing.assert_allclose(T, T_gt, atol=1e-9)
    assert inl.all()


def test_matches_opencv_refine_lm_on_inliers() -> None:
    _, T0, xyz, uv, _, _ = _scene(400, 2)
    _, inl = optimize_pose(T0, xyz, uv, np.ones(len(xyz)), K)
    # One round without Huber is plain least squares, as solvePnPRefineLM.
    T, inl1 = optimize_pose(T0, xyz[inl], uv[inl], np.ones(inl.sum()), K, rounds=1,
                            iterations=50)
    assert inl1.all()
    rvec = cv2.Rodrigues(T0[:3, :3])[0]
    tvec = T0[:3, 3].copy().reshape(3, 1)
    crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_COUNT, 100, 1e-12)
    rvec, tvec = cv2.solvePnPRefineLM(xyz[inl], uv[inl], K, None, rvec, tvec, crit)
    np.testing.assert_allclose(T[:3, :3], cv2.Rodrigues(rvec)[0], atol=1e-8)
    np.testing.assert_allclose(T[:3, 3], tvec.reshape(3), atol=1e-7)


def test_gradient_matches_finite_differences_of_cost() -> None:
    _, T0, xyz, uv, ur, _ = _scene(50, 3, stereo_frac=0.5)
    w = np.random.default_rng(3).uniform(0.3, 1.0, len(xyz))
    cam = np.array([K[0, 0], K[1, 1], K[0, 2], K[1, 2], BF])
    active = np.ones(len(xyz), bool)
    active[::7] = False
    bufs = (np.zeros(3), np.zeros((3, 6)), np.zeros((3, 3)))
    for use_huber in (False, True):
        H, g = np.zeros((6, 6)), np.zeros(6)
        args = (xyz, uv, ur, w, cam, active, use_huber)
        c0 = pose_only._build_normal_eqs(T0[None], *args, H, g, *bufs)
        assert c0 == pytest.approx(pose_only._cost(T0[None], *args, *bufs))
        fd = np.zeros(6)
        for k in range(6):
            d = np.zeros(6)
            d[k] = 1e-6
            cp = pose_only._cost((lie.se3_exp(d) @ T0)[None], *args, *bufs)
            cm = pose_only._cost((lie.se3_exp(-d) @ T0)[None], *args, *bufs)
            fd[k] = (cp - cm) / 2e-6
        # g = -J^T W e = -0.5 * d cost / d xi
        np.testing.assert_allclose(g, -0.5 * fd, rtol=1e-5, atol=1e-4 * np.abs(fd).max())


def test_cost_uses_huber_only_when_asked() -> None:
    T = np.eye(4)[None]
    xyz = np.array([[0.0, 0.0, 1.0]])
    uv = np.array([[320.0 + 5.0, 240.0]])  # residual 5 px -> chi2 25
    args = (T, xyz, uv, np.array([-1.0]), np.ones(1), np.array([500.0, 500.0, 320.0, 240.0, 0.0]),
            np.ones(1, bool))
    bufs = (np.zeros(3), np.zeros((3, 6)), np.zeros((3, 3)))
    assert pose_only._cost(*args, False, *bufs) == pytest.approx(25.0)
    assert pose_only._cost(*args, True, *bufs) == pytest.approx(huber_cost(25.0, DELTA_MONO))


def test_empty_and_bad_input() -> None:
    T0 = lie.se3_exp(np.array([0.1, 0.0, 0.0, 0.0, 0.2, 0.0]))
    T, inl = optimize_pose(T0, np.zeros((0, 3)), np.zeros((0, 2)), np.zeros(0), K)
    np.testing.assert_array_equal(T, T0)
    assert inl.shape == (0,)
    with pytest.raises(GeometryError):
        optimize_pose(T0, np.zeros((3, 3)), np.zeros((2, 2)), np.ones(3), K)


def test_all_points_behind_camera_are_outliers() -> None:
    T_gt, _, xyz, uv, _, _ = _scene(20, 4, outlier_frac=0.0)
    T_flip = np.diag([1.0, -1.0, -1.0, 1.0]) @ T_gt  # camera looks the other way
    T, inl = optimize_pose(T_flip, xyz, uv, np.ones(len(xyz)), K)
    assert not inl.any()
    np.testing.assert_allclose(T, T_flip)

"""Tests of slam.geometry.pnp against exact ground truth and OpenCV's solvePnP / RefineLM."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from slam.errors import GeometryError
from slam.geometry.lie import make_pose, se3_exp, so3_exp
from slam.geometry.pnp import _jacobian, refine_pose_lm, reprojection_errors_px, solve_pnp_ransac
from tests.geometry.synthetic_scenes import (
    K,
    Scene,
    make_scene,
    project,
    rotation_angle_deg,
)

T_GT = make_pose(so3_exp(np.array([0.2, -0.4, 0.1])), np.array([0.5, -0.2, 1.5]))


def scene(seed: int, n: int = 200, noise_px: float = 0.0, outliers: float = 0.0) -> Scene:
    """Points seen by ``T_GT`` in ``uv1``, a fraction ``outliers`` replaced by random pixels."""
    rng = np.random.default_rng(seed)
    sc = make_scene(rng, n, noise_px=noise_px, T_cam1_world=T_GT)
    return _with_outliers(sc, outliers, rng) if outliers > 0 else sc


def _with_outliers(sc: Scene, ratio: float, rng: np.random.Generator) -> Scene:
    idx = rng.choice(len(sc.uv1), round(ratio * len(sc.uv1)), replace=False)
    sc.uv1[idx] = rng.uniform([0, 0], [640, 480], size=(len(idx), 2))
    sc.outliers[:] = False
    sc.outliers[idx] = True
    return sc


def pose_errors(T: np.ndarray, T_ref: np.ndarray) -> tuple[float, float]:
    """Rotation error (deg) and camera-centre error (m)."""
    c = -T[:3, :3].T @ T[:3, 3]
    c_ref = -T_ref[:3, :3].T @ T_ref[:3, 3]
    return rotation_angle_deg(T[:3, :3], T_ref[:3, :3]), float(np.linalg.norm(c - c_ref))


def cv_pose(rvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    R = np.asarray(cv2.Rodrigues(rvec)[0], dtype=np.float64)
    return make_pose(R, np.asarray(tvec, dtype=np.float64).ravel())


@pytest.mark.parametrize("method", ["sqpnp", "epnp"])
def test_pnp_noise_free_exact(method: str) -> None:
    sc = scene(0)
    res = solve_pnp_ransac(sc.xyz_world, sc.uv1, K, method=method, seed=1)  # type: ignore[arg-type]
    assert res is not None
    np.testing.assert_allclose(res.T_cam_world, T_GT, atol=1e-8)
    assert res.inliers.all()


@pytest.mark.parametrize("method", ["sqpnp", "epnp"])
def test_pnp_noise_and_outliers_vs_opencv(method: str) -> None:
    sc = scene(1, 300, noise_px=0.5, outliers=0.3)
    res = solve_pnp_ransac(sc.xyz_world, sc.uv1, K, method=method, seed=1)  # type: ignore[arg-type]
    assert res is not None
    rot, pos = pose_errors(res.T_cam_world, T_GT)
    assert rot < 0.1 and pos < 0.02
    assert res.inliers[~sc.outliers].mean() > 0.97
    assert (res.inliers & sc.outliers).sum() <= 2
    # OpenCV's least-squares solution on the true inliers is the same pose.
    good = ~sc.outliers
    xyz, uv = sc.xyz_world[good], sc.uv1[good]
    _, rvec, tvec = cv2.solvePnP(xyz, uv, K, None, flags=cv2.SOLVEPNP_SQPNP)
    rvec, tvec = cv2.solvePnPRefineLM(xyz, uv, K, None, rvec, tvec)
    rot, pos = pose_errors(res.T_cam_world, cv_pose(rvec, tvec))
    assert rot < 0.02 and pos < 0.005


def test_refine_lm_matches_opencv_least_squares() -> None:
    sc = scene(2, 150, noise_px=1.0)
    T0 = se3_exp(np.array([0.05, -0.03, 0.04, 0.02, -0.01, 0.03])) @ T_GT
    T = refine_pose_lm(T0, sc.xyz_world, sc.uv1, K, huber_px=None)
    rvec0, _ = cv2.Rodrigues(T0[:3, :3])
    rvec, tvec = cv2.solvePnPRefineLM(
        sc.xyz_world, sc.uv1, K, None, rvec0, T0[:3, 3].reshape(3, 1).copy(),
        (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_COUNT, 100, 1e-12),
    )  # fmt: skip
    np.testing.assert_allclose(T, cv_pose(rvec, tvec), atol=1e-7)
    assert reprojection_errors_px(T, sc.xyz_world, sc.uv1, K).mean() < 1.5


def test_refine_lm_noise_free_converges_to_truth() -> None:
    sc = scene(3, 50)
    T0 = se3_exp(np.array([0.2, 0.1, -0.2, 0.05, 0.08, -0.06])) @ T_GT
    T = refine_pose_lm(T0, sc.xyz_world, sc.uv1, K)
    np.testing.assert_allclose(T, T_GT, atol=1e-9)


def test_refine_lm_huber_resists_outliers() -> None:
    sc = scene(4, 200, noise_px=0.5, outliers=0.15)
    T0 = se3_exp(np.array([0.02, 0.01, -0.02, 0.01, 0.0, 0.01])) @ T_GT
    T_ls = refine_pose_lm(T0, sc.xyz_world, sc.uv1, K, huber_px=None)
    T_hub = refine_pose_lm(T0, sc.xyz_world, sc.uv1, K, huber_px=2.0)
    rot_ls, pos_ls = pose_errors(T_ls, T_GT)
    rot_hub, pos_hub = pose_errors(T_hub, T_GT)
    assert pos_hub < 0.3 * pos_ls and rot_hub < 0.3 * rot_ls
    assert pos_hub < 0.03


def test_jacobian_matches_finite_differences() -> None:
    sc = scene(5, 5)
    J = _jacobian(sc.xyz_world @ T_GT[:3, :3].T + T_GT[:3, 3], K)
    eps = 1e-6
    for k in range(6):
        d = np.zeros(6)
        d[k] = eps
        num = (project(se3_exp(d) @ T_GT, sc.xyz_world) - project(se3_exp(-d) @ T_GT, sc.xyz_world))
        np.testing.assert_allclose(J[:, :, k], num / (2 * eps), rtol=1e-5, atol=1e-4)


def test_pnp_degenerate_inputs() -> None:
    sc = scene(6, 50)
    with pytest.raises(GeometryError):
        solve_pnp_ransac(sc.xyz_world[:5], sc.uv1[:5], K)
    with pytest.raises(GeometryError):
        solve_pnp_ransac(sc.xyz_world, sc.uv1[:-1], K)
    bad = sc.uv1.copy()
    bad[3, 0] = np.nan
    with pytest.raises(GeometryError):
        solve_pnp_ransac(sc.xyz_world, bad, K)
    with pytest.raises(GeometryError):
        refine_pose_lm(T_GT, sc.xyz_world[:2], sc.uv1[:2], K)
    with pytest.raises(GeometryError):
        solve_pnp_ransac(sc.xyz_world, sc.uv1, K, method="p4p")  # type: ignore[arg-type]
    # Pure noise: no pose with enough inliers.
    rng = np.random.default_rng(0)
    noise = rng.uniform([0, 0], [640, 480], size=(50, 2))
    assert solve_pnp_ransac(sc.xyz_world, noise, K, min_inliers=20, seed=0) is None

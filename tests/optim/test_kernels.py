"""Finite-difference and reference checks of the Numba optimisation primitives."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from slam.geometry import lie
from slam.optim import kernels as kn

K = np.array([[520.0, 0.0, 320.0], [0.0, 510.0, 240.0], [0.0, 0.0, 1.0]])
BF = 40.0


def _random_pose(rng: np.random.Generator) -> np.ndarray:
    return lie.se3_exp(np.r_[rng.normal(0, 0.5, 3), rng.normal(0, 0.4, 3)])


def _point_in_front(rng: np.random.Generator, T: np.ndarray) -> np.ndarray:
    xyz_cam = np.array([rng.uniform(-2, 2), rng.uniform(-1.5, 1.5), rng.uniform(1.0, 8.0)])
    return lie.transform_points(lie.se3_inv(T), xyz_cam[None])[0]


def _residual(T: np.ndarray, xyz: np.ndarray, stereo: bool) -> np.ndarray:
    e = np.zeros(3)
    cam = np.array([K[0, 0], K[1, 1], K[0, 2], K[1, 2], BF])
    ok = kn.residual_jacobians_into(T[None], 0, xyz[None], 0, cam, 0.0, 0.0, 0.0, stereo, e,
                                    np.zeros((3, 6)), np.zeros((3, 3)), False)
    assert ok
    return e[: 3 if stereo else 2].copy()


@pytest.mark.parametrize("scale", [1e-9, 1e-4, 0.3, 2.5])
def test_se3_exp_matches_numpy_lie(scale: float) -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        xi = rng.normal(0, scale, 6)
        np.testing.assert_allclose(kn.se3_exp(xi), lie.se3_exp(xi), atol=1e-12, rtol=0)


def test_left_update_is_exp_times_pose() -> None:
    rng = np.random.default_rng(2)
    T = _random_pose(rng)
    xi = rng.normal(0, 0.2, 6)
    np.testing.assert_allclose(kn.left_update(T, xi), lie.se3_exp(xi) @ T, atol=1e-12)


@pytest.mark.parametrize("stereo", [False, True])
def test_project_matches_opencv(stereo: bool) -> None:
    rng = np.random.default_rng(3)
    T = _random_pose(rng)
    X = _point_in_front(rng, T)
    uv_cv, _ = cv2.projectPoints(X[None], cv2.Rodrigues(T[:3, :3])[0], T[:3, 3], K, None)
    xyz_cam = T[:3, :3] @ X + T[:3, 3]
    h = kn.project(K[0, 0], K[1, 1], K[0, 2], K[1, 2], BF, xyz_cam, stereo)
    np.testing.assert_allclose(h[:2], uv_cv.reshape(2), atol=1e-9)
    if stereo:
        assert h[2] == pytest.approx(h[0] - BF / xyz_cam[2], abs=1e-12)
    # the residual is obs - projection
    np.testing.assert_allclose(_residual(T, X, stereo), -h, atol=1e-12)


@pytest.mark.parametrize("stereo", [False, True])
def test_pose_jacobian_finite_differences(stereo: bool) -> None:
    rng = np.random.default_rng(4)
    eps = 1e-6
    for _ in range(10):
        T = _random_pose(rng)
        X = _point_in_front(rng, T)
        J = kn.jacobian_pose(T, X, K, BF, stereo)
        assert J.shape == ((3 if stereo else 2), 6)
        J_fd = np.zeros_like(J)
        for k in range(6):
            d = np.zeros(6)
            d[k] = eps
            J_fd[:, k] = (_residual(lie.se3_exp(d) @ T, X, stereo)
                          - _residual(lie.se3_exp(-d) @ T, X, stereo)) / (2 * eps)
        np.testing.assert_allclose(J, J_fd, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("stereo", [False, True])
def test_point_jacobian_finite_differences(stereo: bool) -> None:
    rng = np.random.default_rng(5)
    eps = 1e-6
    for _ in range(10):
        T = _random_pose(rng)
        X = _point_in_front(rng, T)
        J = kn.jacobian_point(T, X, K, BF, stereo)
        assert J.shape == ((3 if stereo else 2), 3)
        J_fd = np.zeros_like(J)
        for k in range(3):
            d = np.zeros(3)
            d[k] = eps
            J_fd[:, k] = (_residual(T, X + d, stereo) - _residual(T, X - d, stereo)) / (2 * eps)
        np.testing.assert_allclose(J, J_fd, rtol=1e-6, atol=1e-5)


def test_behind_camera_is_rejected() -> None:
    T = np.eye(4)
    e = np.zeros(3)
    cam = np.array([500.0, 500.0, 0.0, 0.0, 0.0])
    ok = kn.residual_jacobians_into(T[None], 0, np.array([[0.0, 0.0, -1.0]]), 0, cam, 0.0, 0.0,
                                    -1.0, False, e, np.zeros((3, 6)), np.zeros((3, 3)), True)
    assert not ok


def test_huber_cost_weight_and_derivative() -> None:
    delta = kn.DELTA_MONO
    d2 = delta * delta
    assert kn.huber_cost(2.0, delta) == 2.0
    assert kn.huber_weight(2.0, delta) == 1.0
    assert kn.huber_cost(25.0, delta) == pytest.approx(2 * delta * 5.0 - d2)
    assert kn.huber_weight(25.0, delta) == pytest.approx(delta / 5.0)
    # continuous at the threshold, and the weight is d rho / d chi2
    assert kn.huber_cost(d2 * (1 + 1e-12), delta) == pytest.approx(d2, rel=1e-9)
    for s in [0.5, 3.0, 8.0, 100.0]:
        h = 1e-6
        fd = (kn.huber_cost(s + h, delta) - kn.huber_cost(s - h, delta)) / (2 * h)
        assert kn.huber_weight(s, delta) == pytest.approx(fd, rel=1e-6)


def test_robust_chi2_mono_stereo_and_huber() -> None:
    # mono: e = (3, 4), |e|^2 = 25; e2 is ignored
    assert kn.robust_chi2(3.0, 4.0, 100.0, False, 0.5, False) == (12.5, 12.5, 0.5)
    chi2, cost, w = kn.robust_chi2(3.0, 4.0, 100.0, False, 0.5, True)
    d = kn.DELTA_MONO
    assert chi2 == 12.5
    assert cost == pytest.approx(2 * d * np.sqrt(12.5) - d * d)
    assert w == pytest.approx(0.5 * d / np.sqrt(12.5))
    # stereo: e = (1, 2, 2), |e|^2 = 9; inside vs outside the stereo threshold (7.815)
    assert kn.robust_chi2(1.0, 2.0, 2.0, True, 0.5, True) == (4.5, 4.5, 0.5)
    chi2, cost, w = kn.robust_chi2(1.0, 2.0, 2.0, True, 2.0, True)
    d = kn.DELTA_STEREO
    assert chi2 == 18.0
    assert cost == pytest.approx(2 * d * np.sqrt(18.0) - d * d)
    assert w == pytest.approx(2.0 * d / np.sqrt(18.0))


def test_cholesky_solve_matches_numpy() -> None:
    rng = np.random.default_rng(6)
    n = 18
    A = rng.normal(size=(n, n))
    A = A @ A.T + n * np.eye(n)
    b = rng.normal(size=n)
    big = np.zeros((n + 4, n + 4))
    big[:n, :n] = np.tril(A)  # only the lower triangle is read
    x = np.r_[b, np.zeros(4)]
    assert kn.cholesky_solve_into(big, x, n)
    np.testing.assert_allclose(x[:n], np.linalg.solve(A, b), rtol=1e-10, atol=1e-12)
    bad = -np.eye(3)
    assert not kn.cholesky_solve_into(bad, np.ones(3), 3)

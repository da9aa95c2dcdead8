"""Tests of slam.geometry.lie: exp/log round trips, matrix exponential, adjoints."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from scipy.spatial.transform import Rotation

from slam.geometry.lie import (
    hat,
    make_pose,
    se3_adjoint,
    se3_exp,
    se3_inv,
    se3_log,
    sim3_adjoint,
    sim3_exp,
    sim3_inv,
    sim3_log,
    so3_exp,
    so3_left_jacobian,
    so3_left_jacobian_inv,
    so3_log,
    transform_points,
    vee,
)

RNG = np.random.default_rng(42)
SCALES = [1e-9, 1e-7, 1e-5, 1e-3, 1e-1, 0.5, 2.0]
EPS = float(np.finfo(np.float64).eps)
# Rounding errors grow with the sizes involved: exp(A) to a few hundred ulps of
# |A| * |exp(A)| (the closed forms and scipy's scaling and squaring alike), log(S) to a few
# ulps of |v| * |S| * |S^-1|. A sim(3) draw at scale 2 has a scale factor e^sigma up to
# e^8, entries in the thousands. Tolerances in ulps of those products (each size counted
# at least 1, so unit-size cases keep the former 1e-12, 1e-13 and 1e-15) hold with 3x to 8x
# margin over 10 000 draws per scale (worst seen: 560, 6 and 1.5 ulps), whichever the test
# order that shuffles the shared RNG's draws.
SIM3_EXP_ULPS, SE3_EXP_ULPS, LOG_ULPS = 4500, 450, 5


def size_tol(ulps: float, *sizes: float) -> float:
    """``ulps`` units in the last place of the product of ``sizes`` (each at least 1)."""
    return ulps * EPS * float(np.prod([max(1.0, abs(x)) for x in sizes]))


def exp_tol(ulps: float, A: np.ndarray, S: np.ndarray) -> float:
    return size_tol(ulps, np.abs(A).max(), np.abs(S).max())


def log_tol(v: np.ndarray, S: np.ndarray) -> float:
    return size_tol(LOG_ULPS, float(np.linalg.norm(v)), np.abs(S).max(),
                    np.abs(np.linalg.inv(S)).max())


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def random_tangent(dim: int, scale: float) -> np.ndarray:
    """Random tangent vector (dim,) of size ~scale, rotation angle below pi (log is unique)."""
    v = RNG.normal(size=dim) * scale
    angle = np.linalg.norm(v[3:6])
    if angle > 3.0:
        v[3:6] *= 3.0 / angle
    return v


def hat4(v: np.ndarray) -> np.ndarray:
    """Lie algebra matrix (4x4) of an se(3) (6,) or sim(3) (7,) tangent vector."""
    M = np.zeros((4, 4))
    M[:3, :3] = hat(v[3:6]) + (v[6] if len(v) == 7 else 0.0) * np.eye(3)
    M[:3, 3] = v[:3]
    return M


def test_hat_vee() -> None:
    w, v = RNG.normal(size=3), RNG.normal(size=3)
    np.testing.assert_allclose(hat(w) @ v, np.cross(w, v))
    np.testing.assert_allclose(vee(hat(w)), w)
    np.testing.assert_allclose(hat(w), -hat(w).T)


@pytest.mark.parametrize("scale", SCALES)
def test_so3_exp_vs_scipy_and_log_round_trip(scale: float) -> None:
    for _ in range(20):
        phi = unit(RNG.normal(size=3)) * scale * RNG.uniform(0.5, 1.0)
        R = so3_exp(phi)
        np.testing.assert_allclose(R, Rotation.from_rotvec(phi).as_matrix(), atol=1e-14)
        np.testing.assert_allclose(R, scipy.linalg.expm(hat(phi)), atol=1e-13)
        np.testing.assert_allclose(so3_log(R), phi, rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("gap", [0.3, 1e-3, 1e-5, 1e-8])
def test_so3_log_near_pi(gap: float) -> None:
    for _ in range(50):
        phi = unit(RNG.normal(size=3)) * (np.pi - gap)
        np.testing.assert_allclose(so3_log(so3_exp(phi)), phi, atol=1e-9)
    R = so3_exp(np.array([0.0, 0.0, np.pi]))
    np.testing.assert_allclose(so3_exp(so3_log(R)), R, atol=1e-12)


def test_left_jacobian_inverse() -> None:
    rng = np.random.default_rng(7)  # its own draws, whatever order the tests run in
    for scale in SCALES:
        phi = rng.normal(size=3) * scale
        J = so3_left_jacobian(phi)
        # A product with an inverse is exact to rounding amplified by J's condition
        # (J is singular at |phi| = 2 pi, which a normal draw of scale 2 can approach).
        tol = 64 * np.finfo(np.float64).eps * np.linalg.cond(J)
        np.testing.assert_allclose(J @ so3_left_jacobian_inv(phi), np.eye(3), atol=tol)
        # J = int_0^1 exp(u phi^) du: compare with a fine trapezoidal quadrature.
        u = np.linspace(0.0, 1.0, 2001)
        Rs = np.stack([so3_exp(phi * ui) for ui in u])
        J_num = np.trapezoid(Rs, u, axis=0)
        np.testing.assert_allclose(J, J_num, atol=1e-7 * max(1.0, float(np.linalg.norm(phi))))


@pytest.mark.parametrize("scale", SCALES)
def test_se3_exp_is_matrix_exponential(scale: float) -> None:
    for _ in range(10):
        xi = random_tangent(6, scale)
        T = se3_exp(xi)
        np.testing.assert_allclose(T, scipy.linalg.expm(hat4(xi)),
                                   atol=exp_tol(SE3_EXP_ULPS, hat4(xi), T))
        np.testing.assert_allclose(se3_log(T), xi, rtol=1e-11, atol=log_tol(xi, T))


def test_se3_inv_and_transform() -> None:
    T = se3_exp(RNG.normal(size=6))
    np.testing.assert_allclose(se3_inv(T) @ T, np.eye(4), atol=1e-12)
    xyz = RNG.normal(size=(5, 3))
    expected = (T @ np.c_[xyz, np.ones(5)].T).T[:, :3]
    np.testing.assert_allclose(transform_points(T, xyz), expected)
    np.testing.assert_allclose(make_pose(T[:3, :3], T[:3, 3]), T)


def test_se3_adjoint_identity() -> None:
    for _ in range(10):
        T = se3_exp(RNG.normal(size=6) * 2)
        xi = RNG.normal(size=6)
        lhs = T @ se3_exp(xi) @ se3_inv(T)
        np.testing.assert_allclose(lhs, se3_exp(se3_adjoint(T) @ xi), atol=1e-10)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("zero", ["none", "phi", "sigma", "both"])
def test_sim3_exp_is_matrix_exponential(scale: float, zero: str) -> None:
    for _ in range(5):
        v = random_tangent(7, scale)
        if zero in ("phi", "both"):
            v[3:6] = 0.0
        if zero in ("sigma", "both"):
            v[6] = 0.0
        S = sim3_exp(v)
        np.testing.assert_allclose(S, scipy.linalg.expm(hat4(v)), rtol=1e-12,
                                   atol=exp_tol(SIM3_EXP_ULPS, hat4(v), S))
        np.testing.assert_allclose(sim3_log(S), v, rtol=1e-11, atol=log_tol(v, S))


def test_sim3_inv_and_adjoint_identity() -> None:
    for _ in range(10):
        S = sim3_exp(RNG.normal(size=7))
        np.testing.assert_allclose(sim3_inv(S) @ S, np.eye(4), atol=1e-12)
        v = RNG.normal(size=7) * 0.7
        lhs = S @ sim3_exp(v) @ sim3_inv(S)
        np.testing.assert_allclose(lhs, sim3_exp(sim3_adjoint(S) @ v), atol=1e-9)

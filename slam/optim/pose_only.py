"""Pose-only optimisation (ORB-SLAM's ``PoseOptimization``) with fixed 3-D points.

Several rounds of Levenberg-Marquardt on the 6-DoF camera pose; after each round every
observation (including those excluded so far) is re-classified by its chi2 against the
95 % thresholds (5.991 mono, 7.815 stereo); outliers are left out of the next round.
The Huber kernel is used in all rounds but the last. Unlike ORB-SLAM, each round starts
from the previous round's estimate rather than from the initial pose (it converges in
fewer iterations and gives the same optimum). See :mod:`slam.optim.kernels` for the
residual, Jacobian and perturbation conventions.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from numpy.typing import NDArray

from slam.errors import GeometryError
from slam.optim.kernels import (
    CHI2_MONO,
    CHI2_STEREO,
    cholesky_solve_into,
    left_update_into,
    residual_jacobians_into,
    robust_chi2,
)

_MIN_ACTIVE = 3  # fewer inliers than this cannot constrain a pose: stop the rounds
# The Numba helpers take the pose as a (1, 4, 4) array (index 0), as the kernels expect.


@njit(cache=True, nogil=True, fastmath=False)
def _build_normal_eqs(T, xyz, uv, ur, inv_s2, cam, active, use_huber, H, g, e, Jp, Jx):
    """Fill ``H`` (6x6, upper triangle) and ``g = -J^T W e`` (6,); return the robust cost."""
    H[:, :] = 0.0
    g[:] = 0.0
    cost = 0.0
    for i in range(xyz.shape[0]):
        if not active[i]:
            continue
        stereo = ur[i] >= 0.0
        if not residual_jacobians_into(T, 0, xyz, i, cam, uv[i, 0], uv[i, 1], ur[i], stereo,
                                       e, Jp, Jx, True):
            continue
        _chi2, rho, w = robust_chi2(e[0], e[1], e[2], stereo, inv_s2[i], use_huber)
        cost += rho
        for r in range(3 if stereo else 2):
            er = w * e[r]
            for a in range(6):
                wa = w * Jp[r, a]
                g[a] -= Jp[r, a] * er
                for b in range(a, 6):
                    H[a, b] += wa * Jp[r, b]
    return cost


@njit(cache=True, nogil=True, fastmath=False)
def _cost(T, xyz, uv, ur, inv_s2, cam, active, use_huber, e, Jp, Jx):
    """Robust cost (sum of Huber-ed or plain chi2) of the active observations at ``T``."""
    cost = 0.0
    for i in range(xyz.shape[0]):
        if not active[i]:
            continue
        stereo = ur[i] >= 0.0
        if residual_jacobians_into(T, 0, xyz, i, cam, uv[i, 0], uv[i, 1], ur[i], stereo,
                                   e, Jp, Jx, False):
            cost += robust_chi2(e[0], e[1], e[2], stereo, inv_s2[i], use_huber)[1]
    return cost


@njit(cache=True, nogil=True, fastmath=False)
def _lm_round(T, xyz, uv, ur, inv_s2, cam, active, use_huber, iterations):
    """Levenberg-Marquardt on ``T`` (modified in place), g2o's lambda schedule."""
    H = np.zeros((6, 6))
    A = np.zeros((6, 6))
    g = np.zeros(6)
    dx = np.zeros(6)
    e = np.zeros(3)
    Jp = np.zeros((3, 6))
    Jx = np.zeros((3, 3))
    tmp = np.empty((4, 4))
    T_new = np.empty((1, 4, 4))
    lam = 0.0
    nu = 2.0
    for it in range(iterations):
        cost = _build_normal_eqs(T, xyz, uv, ur, inv_s2, cam, active, use_huber, H, g, e, Jp, Jx)
        if it == 0:
            lam = 0.0
            for a in range(6):
                lam = max(lam, H[a, a])
            lam *= 1e-5
            nu = 2.0
        accepted = False
        converged = False
        for _trial in range(10):
            for a in range(6):
                for b in range(a, 6):
                    A[b, a] = H[a, b]  # lower triangle for the solver
                A[a, a] += lam
                dx[a] = g[a]
            ok = cholesky_solve_into(A, dx, 6)
            new_cost = np.inf
            if ok:
                left_update_into(T[0], dx, tmp, T_new[0])
                new_cost = _cost(T_new, xyz, uv, ur, inv_s2, cam, active, use_huber, e, Jp, Jx)
            scale = 1e-3
            for a in range(6):
                scale += dx[a] * (lam * dx[a] + g[a])
            rho = (cost - new_cost) / scale if ok else -1.0
            if ok and rho > 0.0 and math.isfinite(new_cost):
                alpha = min(1.0 - (2.0 * rho - 1.0) ** 3, 2.0 / 3.0)
                lam *= max(1.0 / 3.0, alpha)
                nu = 2.0
                T[:] = T_new
                accepted = True
                converged = cost - new_cost <= 1e-9 * cost
                break
            lam *= nu
            nu *= 2.0
        if not accepted:
            break
        step2 = 0.0
        for a in range(6):
            step2 += dx[a] * dx[a]
        if converged or step2 < 1e-14:  # |step| < 1e-7 (m, rad)
            break


@njit(cache=True, nogil=True, fastmath=False)
def _classify(T, xyz, uv, ur, inv_s2, cam, inlier):
    """Set ``inlier[i]`` by the chi2 test (and positive depth); return the inlier count."""
    e = np.zeros(3)
    Jp = np.zeros((3, 6))
    Jx = np.zeros((3, 3))
    n = 0
    for i in range(xyz.shape[0]):
        stereo = ur[i] >= 0.0
        if not residual_jacobians_into(T, 0, xyz, i, cam, uv[i, 0], uv[i, 1], ur[i], stereo,
                                       e, Jp, Jx, False):
            inlier[i] = False
            continue
        chi2 = robust_chi2(e[0], e[1], e[2], stereo, inv_s2[i], False)[0]
        inlier[i] = chi2 <= (CHI2_STEREO if stereo else CHI2_MONO)
        if inlier[i]:
            n += 1
    return n


@njit(cache=True, nogil=True, fastmath=False)
def _optimize_pose_nb(T0, xyz, uv, ur, inv_s2, cam, rounds, iterations):
    T = T0.copy().reshape((1, 4, 4))
    n = xyz.shape[0]
    active = np.ones(n, dtype=np.bool_)
    for rnd in range(rounds):
        use_huber = rnd < rounds - 1
        _lm_round(T, xyz, uv, ur, inv_s2, cam, active, use_huber, iterations)
        n_in = _classify(T, xyz, uv, ur, inv_s2, cam, active)
        if n_in < _MIN_ACTIVE:
            break
    return T[0].copy(), active


def optimize_pose(
    T_cam_world: NDArray[np.float64],
    xyz_world: NDArray[np.float64],
    uv: NDArray[np.float64],
    inv_sigma2: NDArray[np.float64],
    K: NDArray[np.float64],
    u_right: NDArray[np.float64] | None = None,
    bf: float = 0.0,
    rounds: int = 4,
    iterations: int = 10,
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Refine a camera pose against fixed 3-D points (ORB-SLAM's pose-only BA).

    Args:
        T_cam_world: initial pose (4, 4), camera-from-world.
        xyz_world: fixed map points (N, 3), world frame, metres.
        uv: observed undistorted pixels (N, 2).
        inv_sigma2: information weight per observation (N,), ``1 / scale_level^2``.
        K: intrinsics (3, 3).
        u_right: right-image u coordinate (N,) (stereo / RGB-D virtual right), ``< 0`` for
            monocular observations; None means all monocular.
        bf: stereo baseline times fx (pixels * metres); used only where ``u_right >= 0``.
        rounds: outlier-classification rounds (Huber in all but the last).
        iterations: LM iterations per round (stops early once converged).

    Returns:
        ``(T_cam_world (4, 4), inliers (N,) bool)``; inliers pass the final chi2 test
        (5.991 mono / 7.815 stereo at ``inv_sigma2`` weighting) and lie in front of the camera.
        With N = 0 the input pose is returned unchanged.
    """
    T0 = np.ascontiguousarray(T_cam_world, dtype=np.float64)
    xyz = np.ascontiguousarray(xyz_world, dtype=np.float64).reshape(-1, 3)
    n = xyz.shape[0]
    uv_a = np.ascontiguousarray(uv, dtype=np.float64).reshape(-1, 2)
    w = np.ascontiguousarray(inv_sigma2, dtype=np.float64).reshape(-1)
    ur = (np.full(n, -1.0) if u_right is None
          else np.ascontiguousarray(u_right, dtype=np.float64).reshape(-1))
    if T0.shape != (4, 4) or uv_a.shape[0] != n or w.shape[0] != n or ur.shape[0] != n:
        raise GeometryError(
            f"optimize_pose: inconsistent shapes T{T0.shape} xyz{xyz.shape} uv{uv_a.shape} "
            f"inv_sigma2{w.shape} u_right{ur.shape}"
        )
    if n == 0:
        return T0.copy(), np.zeros(0, dtype=bool)
    Kf = np.asarray(K, dtype=np.float64)
    cam = np.array([Kf[0, 0], Kf[1, 1], Kf[0, 2], Kf[1, 2], float(bf)])
    T, inliers = _optimize_pose_nb(T0, xyz, uv_a, ur, w, cam, int(rounds), int(iterations))
    return T, inliers

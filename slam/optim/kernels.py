"""Numba primitives shared by the optimisers: SE(3) exp, projection, Jacobians, Huber.

Conventions (all float64):

* Poses are ``T_cam_world`` (4x4); a point maps as ``X_cam = R X_world + t``.
* Perturbations are on the left: ``T_cam_world <- exp(xi) T_cam_world`` with the
  twist ``xi = [rho (3), phi (3)]`` (translation first, as in ``slam/geometry/lie.py``).
* The residual of an observation is ``e = z_obs - h(X_cam)`` with
  ``h = [u, v]`` (monocular, 2 rows) or ``h = [u, v, u_r]`` with the virtual right
  coordinate ``u_r = u - bf / z`` (stereo / RGB-D, 3 rows). The Jacobians below are
  those of the residual ``e`` (i.e. minus the Jacobian of the projection).
* The information of an observation is ``inv_sigma2 * I``; ``chi2 = inv_sigma2 * |e|^2``.
* Huber works on ``chi2`` with a threshold ``delta`` in whitened units:
  ``rho(s) = s`` for ``s <= delta^2`` else ``2 delta sqrt(s) - delta^2`` (as g2o).

The ``*_into`` functions write into caller-provided buffers and are the ones used in
hot loops; the others allocate and exist for tests and one-off use.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

CHI2_MONO = 5.991
"""95 % chi-square quantile, 2 degrees of freedom."""
CHI2_STEREO = 7.815
"""95 % chi-square quantile, 3 degrees of freedom."""
DELTA_MONO = math.sqrt(CHI2_MONO)
DELTA_STEREO = math.sqrt(CHI2_STEREO)
MIN_DEPTH = 1e-6
"""Observations with ``z_cam <= MIN_DEPTH`` have no valid projection."""


@njit(cache=True, nogil=True, fastmath=False)
def se3_exp_into(xi: np.ndarray, out: np.ndarray) -> None:
    """Write ``exp(xi)`` (4x4) of a twist ``xi = [rho, phi]`` (6,) into ``out``."""
    wx, wy, wz = xi[3], xi[4], xi[5]
    th2 = wx * wx + wy * wy + wz * wz
    th = math.sqrt(th2)
    if th < 1e-6:
        a = 1.0 - th2 / 6.0
        b = 0.5 - th2 / 24.0
        c = 1.0 / 6.0 - th2 / 120.0
    else:
        a = math.sin(th) / th
        b = (1.0 - math.cos(th)) / th2
        c = (th - math.sin(th)) / (th2 * th)
    # W = hat(w), W2 = W @ W = w w^T - th2 I
    W2_00 = wx * wx - th2
    W2_11 = wy * wy - th2
    W2_22 = wz * wz - th2
    W2_01 = wx * wy
    W2_02 = wx * wz
    W2_12 = wy * wz
    out[0, 0] = 1.0 + b * W2_00
    out[0, 1] = -a * wz + b * W2_01
    out[0, 2] = a * wy + b * W2_02
    out[1, 0] = a * wz + b * W2_01
    out[1, 1] = 1.0 + b * W2_11
    out[1, 2] = -a * wx + b * W2_12
    out[2, 0] = -a * wy + b * W2_02
    out[2, 1] = a * wx + b * W2_12
    out[2, 2] = 1.0 + b * W2_22
    # V = I + b W + c W2; t = V rho
    V00 = 1.0 + c * W2_00
    V01 = -b * wz + c * W2_01
    V02 = b * wy + c * W2_02
    V10 = b * wz + c * W2_01
    V11 = 1.0 + c * W2_11
    V12 = -b * wx + c * W2_12
    V20 = -b * wy + c * W2_02
    V21 = b * wx + c * W2_12
    V22 = 1.0 + c * W2_22
    out[0, 3] = V00 * xi[0] + V01 * xi[1] + V02 * xi[2]
    out[1, 3] = V10 * xi[0] + V11 * xi[1] + V12 * xi[2]
    out[2, 3] = V20 * xi[0] + V21 * xi[1] + V22 * xi[2]
    out[3, 0] = 0.0
    out[3, 1] = 0.0
    out[3, 2] = 0.0
    out[3, 3] = 1.0


@njit(cache=True, nogil=True, fastmath=False)
def se3_exp(xi: np.ndarray) -> np.ndarray:
    """``exp(xi)`` (4x4) of a twist ``xi = [rho, phi]`` (6,)."""
    out = np.empty((4, 4))
    se3_exp_into(xi, out)
    return out


@njit(cache=True, nogil=True, fastmath=False)
def left_update_into(T: np.ndarray, xi: np.ndarray, tmp: np.ndarray, out: np.ndarray) -> None:
    """``out = exp(xi) @ T`` for 4x4 poses; ``tmp`` is a (4,4) scratch buffer.

    ``out`` may alias ``T``.
    """
    se3_exp_into(xi, tmp)
    for c in range(4):
        x0, x1, x2, x3 = T[0, c], T[1, c], T[2, c], T[3, c]
        for r in range(3):
            out[r, c] = tmp[r, 0] * x0 + tmp[r, 1] * x1 + tmp[r, 2] * x2 + tmp[r, 3] * x3
        out[3, c] = x3


@njit(cache=True, nogil=True, fastmath=False)
def left_update(T: np.ndarray, xi: np.ndarray) -> np.ndarray:
    """``exp(xi) @ T`` (4x4)."""
    out = np.empty((4, 4))
    left_update_into(T, xi, np.empty((4, 4)), out)
    return out


@njit(cache=True, nogil=True, fastmath=False)
def project(fx: float, fy: float, cx: float, cy: float, bf: float, xyz_cam: np.ndarray,
            stereo: bool) -> np.ndarray:
    """Projection ``[u, v]`` (2,) or ``[u, v, u - bf/z]`` (3,) of a camera-frame point."""
    iz = 1.0 / xyz_cam[2]
    u = fx * xyz_cam[0] * iz + cx
    v = fy * xyz_cam[1] * iz + cy
    if stereo:
        out = np.empty(3)
        out[2] = u - bf * iz
    else:
        out = np.empty(2)
    out[0] = u
    out[1] = v
    return out


# The small per-observation kernels are inlined into the callers' Numba IR: a plain
# call costs ~2-3x in the BA loops (argument marshalling of the array structs).
@njit(cache=True, nogil=True, fastmath=False, inline="always")
def residual_jacobians_into(
    T: np.ndarray, m: int, X: np.ndarray, p: int, cam: np.ndarray,
    u: float, v: float, u_right: float, stereo: bool,
    e: np.ndarray, J_pose: np.ndarray, J_point: np.ndarray, want_jac: bool,
) -> bool:
    """Residual and Jacobians of one observation of point ``X[p]`` by camera ``T[m]``.

    ``T`` is (M, 4, 4) ``T_cam_world``, ``X`` is (P, 3) ``xyz_world``, ``cam`` is
    ``[fx, fy, cx, cy, bf]``; arrays and indices (not row views) are passed to keep the
    hot loops free of reference counting. Writes ``e`` (first 2 or 3 entries),
    ``J_pose`` (rows x 6, w.r.t. the left twist of ``T[m]``) and ``J_point`` (rows x 3,
    w.r.t. ``X[p]``) when ``want_jac``; rows = 3 if ``stereo`` else 2. Returns False
    (writing nothing) if the depth is below :data:`MIN_DEPTH`.
    """
    fx, fy, cx, cy, bf = cam[0], cam[1], cam[2], cam[3], cam[4]
    Xx, Xy, Xz = X[p, 0], X[p, 1], X[p, 2]
    x = T[m, 0, 0] * Xx + T[m, 0, 1] * Xy + T[m, 0, 2] * Xz + T[m, 0, 3]
    y = T[m, 1, 0] * Xx + T[m, 1, 1] * Xy + T[m, 1, 2] * Xz + T[m, 1, 3]
    z = T[m, 2, 0] * Xx + T[m, 2, 1] * Xy + T[m, 2, 2] * Xz + T[m, 2, 3]
    if z <= MIN_DEPTH:
        return False
    iz = 1.0 / z
    pu = fx * x * iz + cx
    e[0] = u - pu
    e[1] = v - (fy * y * iz + cy)
    if stereo:
        e[2] = u_right - (pu - bf * iz)
    if not want_jac:
        return True
    iz2 = iz * iz
    rows = 3 if stereo else 2
    for r in range(rows):
        # a = d h_r / d X_cam
        if r == 0:
            a0, a1, a2 = fx * iz, 0.0, -fx * x * iz2
        elif r == 1:
            a0, a1, a2 = 0.0, fy * iz, -fy * y * iz2
        else:
            a0, a1, a2 = fx * iz, 0.0, -fx * x * iz2 + bf * iz2
        # residual = obs - h, so negate; d X_cam / d xi = [I, -[X_cam]x]
        J_pose[r, 0] = -a0
        J_pose[r, 1] = -a1
        J_pose[r, 2] = -a2
        # d h / d phi = X_cam x a
        J_pose[r, 3] = -(y * a2 - z * a1)
        J_pose[r, 4] = -(z * a0 - x * a2)
        J_pose[r, 5] = -(x * a1 - y * a0)
        # d X_cam / d X_world = R
        for k in range(3):
            J_point[r, k] = -(a0 * T[m, 0, k] + a1 * T[m, 1, k] + a2 * T[m, 2, k])
    return True


@njit(cache=True, nogil=True, fastmath=False)
def _jacobians(T: np.ndarray, xyz_world: np.ndarray, K: np.ndarray, bf: float,
               stereo: bool) -> tuple[np.ndarray, np.ndarray]:
    rows = 3 if stereo else 2
    Jp = np.zeros((rows, 6))
    Jx = np.zeros((rows, 3))
    cam = np.array([K[0, 0], K[1, 1], K[0, 2], K[1, 2], bf])
    residual_jacobians_into(T.reshape((1, 4, 4)), 0, xyz_world.reshape((1, 3)), 0, cam,
                            0.0, 0.0, 0.0, stereo, np.zeros(3), Jp, Jx, True)
    return Jp, Jx


def jacobian_pose(T: np.ndarray, xyz_world: np.ndarray, K: np.ndarray, bf: float,
                  stereo: bool) -> np.ndarray:
    """Jacobian (2x6 mono / 3x6 stereo) of the residual w.r.t. the left pose twist.

    ``T`` (4,4) ``T_cam_world``, ``xyz_world`` (3,). Zero if the point is behind the camera.
    """
    T = np.ascontiguousarray(T, dtype=np.float64)
    X = np.ascontiguousarray(xyz_world, dtype=np.float64)
    return _jacobians(T, X, np.asarray(K, dtype=np.float64), float(bf), bool(stereo))[0]


def jacobian_point(T: np.ndarray, xyz_world: np.ndarray, K: np.ndarray, bf: float,
                   stereo: bool) -> np.ndarray:
    """Jacobian (2x3 mono / 3x3 stereo) of the residual w.r.t. the world point (3,)."""
    T = np.ascontiguousarray(T, dtype=np.float64)
    X = np.ascontiguousarray(xyz_world, dtype=np.float64)
    return _jacobians(T, X, np.asarray(K, dtype=np.float64), float(bf), bool(stereo))[1]


@njit(cache=True, nogil=True, fastmath=False, inline="always")
def huber_weight(chi2: float, delta: float) -> float:
    """IRLS weight ``rho'(chi2)`` of the Huber kernel: 1 inside, ``delta/sqrt(chi2)`` outside."""
    if chi2 <= delta * delta:
        return 1.0
    return delta / math.sqrt(chi2)


@njit(cache=True, nogil=True, fastmath=False, inline="always")
def huber_cost(chi2: float, delta: float) -> float:
    """Robustified chi2 ``rho(chi2)`` of the Huber kernel (g2o's definition)."""
    if chi2 <= delta * delta:
        return chi2
    return 2.0 * delta * math.sqrt(chi2) - delta * delta


@njit(cache=True, nogil=True, fastmath=False, inline="always")
def robust_chi2(e0: float, e1: float, e2: float, stereo: bool, inv_sigma2: float,
                huber: bool) -> tuple[float, float, float]:
    """``(chi2, cost, weight)`` of one observation's residual ``e = [e0, e1(, e2)]``.

    ``chi2 = inv_sigma2 |e|^2`` (``e2`` counts only if ``stereo``); with ``huber``
    ``cost = huber_cost(chi2, delta)`` and ``weight = inv_sigma2 * huber_weight(chi2,
    delta)`` (``delta`` = :data:`DELTA_STEREO` or :data:`DELTA_MONO`), else ``cost = chi2``
    and ``weight = inv_sigma2``. Scalars only: array arguments of an inlined helper
    would add reference counting to the callers' hot loops.
    """
    sq = e0 * e0 + e1 * e1
    if stereo:
        sq += e2 * e2
    chi2 = inv_sigma2 * sq
    if huber:
        delta = DELTA_STEREO if stereo else DELTA_MONO
        return chi2, huber_cost(chi2, delta), inv_sigma2 * huber_weight(chi2, delta)
    return chi2, chi2, inv_sigma2


@njit(cache=True, nogil=True, fastmath=False)
def cholesky_solve_into(A: np.ndarray, b: np.ndarray, n: int) -> bool:
    """Solve ``A x = b`` for the leading ``n x n`` SPD block in place.

    On return the lower triangle of ``A`` holds the Cholesky factor and ``b`` holds
    ``x``. Only the lower triangle of ``A`` is read. Returns False if ``A`` is not
    (numerically) positive definite; ``b`` is then undefined.
    """
    for j in range(n):
        s = A[j, j]
        for k in range(j):
            s -= A[j, k] * A[j, k]
        if not s > 0.0:
            return False
        d = math.sqrt(s)
        A[j, j] = d
        inv_d = 1.0 / d
        for i in range(j + 1, n):
            s = A[i, j]
            for k in range(j):
                s -= A[i, k] * A[j, k]
            A[i, j] = s * inv_d
    for i in range(n):  # forward: L y = b
        s = b[i]
        for k in range(i):
            s -= A[i, k] * b[k]
        b[i] = s / A[i, i]
    for i in range(n - 1, -1, -1):  # backward: L^T x = y
        s = b[i]
        for k in range(i + 1, n):
            s -= A[k, i] * b[k]
        b[i] = s / A[i, i]
    return True

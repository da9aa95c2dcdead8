"""SO(3), SE(3) and Sim(3): exponential and logarithm maps, adjoints.

Conventions: a tangent vector of SE(3) is ``xi = [rho (3), phi (3)]`` (translation
part first, then rotation), so ``exp(xi) = [[exp(phi^), V rho], [0, 1]]``.
A Sim(3) tangent vector is ``[rho (3), phi (3), sigma]`` with scale ``s = e^sigma``.
Poses are 4x4 homogeneous matrices (float64).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]
_EPS = 1e-10


def hat(w: Array) -> Array:
    """Skew-symmetric matrix ``[w]_x`` (3x3) of a 3-vector."""
    return np.array(
        [[0.0, -w[2], w[1]], [w[2], 0.0, -w[0]], [-w[1], w[0], 0.0]], dtype=np.float64
    )


def vee(W: Array) -> Array:
    """Inverse of :func:`hat`: the 3-vector of a skew-symmetric 3x3 matrix."""
    return np.array([W[2, 1], W[0, 2], W[1, 0]], dtype=np.float64)


def so3_exp(phi: Array) -> Array:
    """Rotation matrix (3x3) of an axis-angle vector ``phi`` (radians)."""
    theta = float(np.linalg.norm(phi))
    W = hat(phi)
    if theta < _EPS:
        return np.eye(3) + W + 0.5 * W @ W
    a = np.sin(theta) / theta
    b = (1.0 - np.cos(theta)) / theta**2
    return np.eye(3) + a * W + b * W @ W


def so3_log(R: Array) -> Array:
    """Axis-angle vector (3,) of a rotation matrix, angle in [0, pi]."""
    cos_t = np.clip((np.trace(R) - 1.0) * 0.5, -1.0, 1.0)
    # atan2 keeps the angle accurate near 0 and pi, where arccos is ill-conditioned.
    theta = float(np.arctan2(0.5 * np.linalg.norm(vee(R - R.T)), cos_t))
    if theta < 1e-7:
        return vee(R - R.T) * 0.5
    if np.pi - theta < 1e-4:
        # Near pi: the symmetric part is cos(t) I + (1 - cos(t)) a a^T, so
        # a a^T is exact from it; take its largest column for the axis.
        B = (0.5 * (R + R.T) - cos_t * np.eye(3)) / (1.0 - cos_t)
        k = int(np.argmax(np.diag(B)))
        axis = B[:, k] / np.sqrt(max(B[k, k], _EPS))
        axis /= np.linalg.norm(axis)
        # Fix the sign with the antisymmetric part.
        if np.dot(vee(R - R.T), axis) < 0:
            axis = -axis
        return axis * theta
    return vee(R - R.T) * (theta / (2.0 * np.sin(theta)))


def so3_left_jacobian(phi: Array) -> Array:
    """Left Jacobian ``V`` (3x3) of SO(3), so that ``t = V rho`` in :func:`se3_exp`."""
    theta = float(np.linalg.norm(phi))
    W = hat(phi)
    if theta < 1e-6:
        return np.eye(3) + 0.5 * W + W @ W / 6.0
    a = 2.0 * np.sin(0.5 * theta) ** 2 / theta**2  # (1 - cos t) / t^2 without cancellation
    b = (theta - np.sin(theta)) / theta**3
    return np.eye(3) + a * W + b * W @ W


def so3_left_jacobian_inv(phi: Array) -> Array:
    """Inverse of :func:`so3_left_jacobian` (3x3)."""
    theta = float(np.linalg.norm(phi))
    W = hat(phi)
    if theta < 1e-6:
        return np.eye(3) - 0.5 * W + W @ W / 12.0
    # (1 - t sin t / (2 (1 - cos t))) / t^2, written with the half angle to avoid the
    # cancellation in 1 - cos t that ruins it for small t.
    half = 0.5 * theta
    c = (1.0 - half / np.tan(half)) / theta**2
    return np.eye(3) - 0.5 * W + c * W @ W


def se3_exp(xi: Array) -> Array:
    """Pose (4x4) of a twist ``xi = [rho, phi]`` (6,)."""
    T = np.eye(4)
    T[:3, :3] = so3_exp(xi[3:])
    T[:3, 3] = so3_left_jacobian(xi[3:]) @ xi[:3]
    return T


def se3_log(T: Array) -> Array:
    """Twist ``[rho, phi]`` (6,) of a pose (4x4)."""
    phi = so3_log(T[:3, :3])
    rho = so3_left_jacobian_inv(phi) @ T[:3, 3]
    return np.concatenate([rho, phi])


def se3_inv(T: Array) -> Array:
    """Inverse of a rigid pose (4x4) without a general matrix inverse."""
    R = T[:3, :3]
    out = np.eye(4)
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ T[:3, 3]
    return out


def se3_adjoint(T: Array) -> Array:
    """Adjoint (6x6) of a pose for twists ``[rho, phi]``: ``T exp(xi) T^-1 = exp(Ad xi)``."""
    R, t = T[:3, :3], T[:3, 3]
    Ad = np.zeros((6, 6))
    Ad[:3, :3] = R
    Ad[:3, 3:] = hat(t) @ R
    Ad[3:, 3:] = R
    return Ad


def make_pose(R: Array, t: Array) -> Array:
    """Homogeneous 4x4 pose from a rotation (3x3) and a translation (3,)."""
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = np.asarray(t, dtype=np.float64).reshape(3)
    return T


def transform_points(T: Array, xyz: Array) -> Array:
    """Apply a 4x4 pose (or similarity) to points (N, 3)."""
    return xyz @ T[:3, :3].T + T[:3, 3]


_SERIES_K = np.arange(16)
_SERIES_J = np.arange(8)
_FACT = np.cumprod(np.r_[1.0, np.arange(1.0, 20.0)])  # 0! .. 19!


def _sim3_W_series(theta: float, sigma: float) -> tuple[float, float, float]:
    """Coefficients ``c, a, b`` of ``W`` by power series, exact to rounding for |.| < 0.1.

    ``W = int_0^1 e^(sigma u) exp(u A) du`` gives ``c = sum sigma^k / (k + 1)!`` and
    double series in ``sigma`` and ``theta^2`` for ``a`` and ``b``.
    """
    k, j = _SERIES_K[:, None], _SERIES_J[None, :]
    sk = sigma ** _SERIES_K[:, None] / _FACT[k]
    tj = (-(theta**2)) ** _SERIES_J[None, :]
    c = float(np.sum(sigma**_SERIES_K / _FACT[_SERIES_K + 1]))
    a = float(np.sum(sk * tj / (_FACT[2 * j + 1] * (k + 2 * j + 2))))
    b = float(np.sum(sk * tj / (_FACT[2 * j + 2] * (k + 2 * j + 3))))
    return c, a, b


def _sim3_W(phi: Array, sigma: float) -> Array:
    """The matrix ``W`` (3x3) with ``t = W rho`` in the Sim(3) exponential."""
    theta = float(np.linalg.norm(phi))
    A = hat(phi)
    if abs(sigma) < 0.1 and theta < 0.1:
        c, a, b = _sim3_W_series(theta, sigma)
        return c * np.eye(3) + a * A + b * A @ A
    # Closed forms, written with expm1 and half angles to avoid cancellation.
    s = np.exp(sigma)
    c = _sim3_W_series(0.0, sigma)[0] if abs(sigma) < 0.1 else np.expm1(sigma) / sigma
    sinc = np.sin(theta) / theta if theta > 0.0 else 1.0
    one_minus_s_cos = -np.expm1(sigma) + 2.0 * s * np.sin(0.5 * theta) ** 2
    den = sigma**2 + theta**2
    a = (s * sigma * sinc + one_minus_s_cos) / den
    if theta < 1e-6:  # here |sigma| >= 0.1: the theta -> 0 limit
        b = ((0.5 * sigma**2 - sigma + 1.0) * s - 1.0) / sigma**3
    else:
        b = (c - (-one_minus_s_cos * sigma + s * sinc * theta**2) / den) / theta**2
    return c * np.eye(3) + a * A + b * A @ A


def sim3_exp(v: Array) -> Array:
    """Similarity (4x4, top-left block ``s R``) of ``v = [rho, phi, sigma]`` (7,)."""
    rho, phi, sigma = v[:3], v[3:6], float(v[6])
    S = np.eye(4)
    S[:3, :3] = np.exp(sigma) * so3_exp(phi)
    S[:3, 3] = _sim3_W(phi, sigma) @ rho
    return S


def sim3_log(S: Array) -> Array:
    """Tangent vector ``[rho, phi, sigma]`` (7,) of a similarity (4x4)."""
    sR = S[:3, :3]
    s = float(np.cbrt(np.linalg.det(sR)))
    R = sR / s
    phi = so3_log(R)
    sigma = np.log(s)
    rho = np.linalg.solve(_sim3_W(phi, sigma), S[:3, 3])
    return np.concatenate([rho, phi, [sigma]])


def sim3_inv(S: Array) -> Array:
    """Inverse of a similarity (4x4)."""
    sR = S[:3, :3]
    s = float(np.cbrt(np.linalg.det(sR)))
    R = sR / s
    out = np.eye(4)
    out[:3, :3] = R.T / s
    out[:3, 3] = -(R.T @ S[:3, 3]) / s
    return out


def sim3_adjoint(S: Array) -> Array:
    """Adjoint (7x7) of a similarity for tangent vectors ``[rho, phi, sigma]``."""
    sR = S[:3, :3]
    s = float(np.cbrt(np.linalg.det(sR)))
    R = sR / s
    t = S[:3, 3]
    Ad = np.zeros((7, 7))
    Ad[:3, :3] = s * R
    Ad[:3, 3:6] = hat(t) @ R
    Ad[:3, 6] = -t
    Ad[3:6, 3:6] = R
    Ad[6, 6] = 1.0
    return Ad


def orthonormalize_pose(T: Array) -> Array:
    """Project the rotation block of a pose (4x4) back onto SO(3) (nearest by SVD).

    Composing poses accumulates round-off; anything that chains poses frame
    after frame (the motion model) must re-project or the error grows geometrically.
    """
    U, _, Vt = np.linalg.svd(T[:3, :3])
    R = U @ Vt
    if np.linalg.det(R) < 0:
        U[:, -1] *= -1
        R = U @ Vt
    out = T.copy()
    out[:3, :3] = R
    out[3] = (0.0, 0.0, 0.0, 1.0)
    return out

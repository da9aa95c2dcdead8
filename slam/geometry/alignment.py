"""Least-squares similarity / rigid alignment of point sets (Umeyama 1991).

``umeyama(src, dst)`` finds ``R, t, s`` minimising ``sum |dst_i - (s R src_i + t)|^2``;
points are (N, 3) arrays in any consistent unit.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from slam.errors import GeometryError

Array = NDArray[np.float64]


# umeyama_batch's codes: a good problem, or why it is degenerate.
OK, NOT_FINITE, COINCIDENT, COLLINEAR = 0, 1, 2, 3
_DEGENERATE = {NOT_FINITE: "point sets contain NaN or inf",
               COINCIDENT: "source points coincide; alignment is undefined",
               COLLINEAR: "points are collinear; rotation is undefined"}


def umeyama_batch(src: Array, dst: Array, with_scale: bool = True
                  ) -> tuple[Array, Array, Array, NDArray[np.int8]]:
    """:func:`umeyama` for B problems at once: ``src``, ``dst`` (B, N, 3) give rotations
    (B, 3, 3), translations (B, 3), scales (B,) and a code (B,) per problem: ``OK``, or
    why it is degenerate (``NOT_FINITE``, ``COINCIDENT`` source points, ``COLLINEAR``:
    a rank-deficient covariance). The estimates of degenerate problems are meaningless."""
    x = np.asarray(src, dtype=np.float64)
    y = np.asarray(dst, dtype=np.float64)
    n = x.shape[1]
    mu_x, mu_y = x.mean(axis=1), y.mean(axis=1)
    xc, yc = x - mu_x[:, None], y - mu_y[:, None]
    var_x = (xc * xc).sum(axis=(1, 2)) / n
    cov = np.einsum("bki,bkj->bij", yc, xc) / n
    finite = np.isfinite(cov).all(axis=(1, 2)) & np.isfinite(mu_y).all(axis=1) \
        & np.isfinite(var_x)
    U, D, Vt = np.linalg.svd(np.where(finite[:, None, None], cov, 0.0))
    code = np.full(len(x), OK, np.int8)
    code[D[:, 1] <= 1e-12 * D[:, 0]] = COLLINEAR
    code[~(var_x > 1e-12 * np.maximum(1.0, np.abs(mu_x).max(axis=1)) ** 2)] = COINCIDENT
    code[~finite] = NOT_FINITE
    diag = np.ones((len(x), 3))
    diag[:, 2] = np.where(np.linalg.det(U) * np.linalg.det(Vt) < 0.0, -1.0, 1.0)
    R = U @ (diag[:, :, None] * Vt)
    if with_scale:
        scale = (D * diag).sum(axis=1) / np.where(code == OK, var_x, 1.0)
    else:
        scale = np.ones(len(x))
    t = mu_y - scale[:, None] * np.einsum("bij,bj->bi", R, mu_x)
    return R, t, scale, code


def umeyama(src: Array, dst: Array, with_scale: bool = True) -> tuple[Array, Array, float]:
    """Rotation (3x3), translation (3,) and scale with ``dst ≈ s R src + t``.

    ``src``, ``dst`` are corresponding points (N, 3), N >= 3; without ``with_scale``
    the scale is 1. Raises :class:`GeometryError` on malformed or degenerate input
    (non-finite values, all source points coincident, rank-deficient covariance).
    """
    x = np.asarray(src, dtype=np.float64)
    y = np.asarray(dst, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 3 or x.shape != y.shape:
        raise GeometryError(f"need two (N, 3) point sets, got {x.shape}, {y.shape}")
    if len(x) < 3:
        raise GeometryError(f"need at least 3 point pairs, got {len(x)}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise GeometryError(_DEGENERATE[NOT_FINITE])
    R, t, s, code = umeyama_batch(x[None], y[None], with_scale)
    if code[0] != OK:
        raise GeometryError(_DEGENERATE[int(code[0])])
    return R[0], t[0], float(s[0])


def similarity_matrix(R: Array, t: Array, s: float = 1.0) -> Array:
    """Homogeneous similarity (4x4) ``[[s R, t], [0, 1]]``."""
    S = np.eye(4)
    S[:3, :3] = s * np.asarray(R, dtype=np.float64)
    S[:3, 3] = np.asarray(t, dtype=np.float64).reshape(3)
    return S


def align_trajectories(
    est: Array, ref: Array, *, with_scale: bool = True, n_first: int | None = None
) -> Array:
    """Similarity ``S_ref_est`` (4x4) mapping estimated positions onto reference ones.

    ``est``, ``ref`` are matched positions (N, 3) or poses (N, 4, 4) (their
    translations are used, e.g. ``T_world_cam``). ``n_first`` aligns on the first
    poses only. Apply with ``S @ T_world_cam_est`` (scale the translation only for
    poses, see :func:`apply_similarity_to_poses`).
    """
    p_est = _positions(est)
    p_ref = _positions(ref)
    if n_first is not None:
        p_est, p_ref = p_est[:n_first], p_ref[:n_first]
    R, t, s = umeyama(p_est, p_ref, with_scale)
    return similarity_matrix(R, t, s)


def apply_similarity_to_poses(S: Array, T_world_cam: Array) -> Array:
    """Poses (N, 4, 4) moved by a similarity (4x4), keeping rotations orthonormal."""
    T = np.asarray(T_world_cam, dtype=np.float64)
    s = float(np.cbrt(np.linalg.det(S[:3, :3])))
    R = S[:3, :3] / s
    out = np.array(T, copy=True)
    out[:, :3, :3] = R @ T[:, :3, :3]
    out[:, :3, 3] = T[:, :3, 3] @ S[:3, :3].T + S[:3, 3]
    return out


def _positions(a: Array) -> Array:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[1:] == (4, 4):
        return np.asarray(arr[:, :3, 3], dtype=np.float64)
    if arr.ndim == 2 and arr.shape[1] == 3:
        return arr
    raise GeometryError(f"expected positions (N, 3) or poses (N, 4, 4), got {arr.shape}")

"""Linear (DLT) triangulation and the checks that decide whether a new point is kept.

Pixels ``uv`` are (N, 2) ideal (undistorted) pixel coordinates; poses are
``T_cam_world`` (4x4, ``x ~ K [R | T] X``); points ``xyz_world`` are (N, 3) metres.
Everything is vectorised over the N points: one batched SVD of (N, 4, 4) systems.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from slam.errors import GeometryError

Array = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

CHI2_2DOF_95 = 5.991


def _as_points(a: Array, dim: int, name: str) -> Array:
    """``a`` as a float64 (N, dim) array, or :class:`GeometryError`."""
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise GeometryError(f"{name} must have shape (N, {dim}), got {arr.shape}")
    return arr


def projection_matrix(K: Array, T_cam_world: Array) -> Array:
    """Camera matrix ``P = K [R | T]`` (3x4) of intrinsics (3x3) and a pose (4x4)."""
    return np.asarray(K, dtype=np.float64) @ np.asarray(T_cam_world, dtype=np.float64)[:3, :4]


def triangulate_dlt(P1: Array, P2: Array, uv1: Array, uv2: Array) -> Array:
    """Linear triangulation of correspondences (N, 2) seen by cameras ``P1``, ``P2`` (3x4).

    ``uv`` are pixels if ``P = K [R | T]`` or normalised coordinates if ``P = [R | T]``.
    Returns points (N, 3) in the frame the ``P`` map from; rows whose homogeneous
    coordinate vanishes (points at infinity) or whose input is not finite are NaN.
    """
    uv1 = _as_points(uv1, 2, "uv1")
    uv2 = _as_points(uv2, 2, "uv2")
    if len(uv1) != len(uv2):
        raise GeometryError(f"uv1 and uv2 differ in length: {len(uv1)} vs {len(uv2)}")
    P1 = np.asarray(P1, dtype=np.float64)
    P2 = np.asarray(P2, dtype=np.float64)
    A = np.empty((len(uv1), 4, 4))
    A[:, 0] = uv1[:, :1] * P1[2] - P1[0]
    A[:, 1] = uv1[:, 1:] * P1[2] - P1[1]
    A[:, 2] = uv2[:, :1] * P2[2] - P2[0]
    A[:, 3] = uv2[:, 1:] * P2[2] - P2[1]
    finite = np.isfinite(A).all(axis=(1, 2))
    A[~finite] = 0.0
    # Equilibrate the rows: the null vector does not change, the conditioning improves.
    norms = np.linalg.norm(A, axis=2, keepdims=True)
    A /= np.where(norms > 0.0, norms, 1.0)
    _, _, Vt = np.linalg.svd(A)
    X = Vt[:, 3, :]
    w = X[:, 3]
    ok = finite & (np.abs(w) > 1e-12 * np.linalg.norm(X, axis=1))
    out = np.full((len(uv1), 3), np.nan)
    out[ok] = X[ok, :3] / w[ok, None]
    return out


def camera_center(T_cam_world: Array) -> Array:
    """Camera centre (3,) in world coordinates of a pose ``T_cam_world`` (4x4)."""
    R, t = T_cam_world[:3, :3], T_cam_world[:3, 3]
    return np.asarray(-R.T @ t, dtype=np.float64)


def parallax_cos(xyz_world: Array, center1: Array, center2: Array) -> Array:
    """Cosine (N,) of the angle at each point between the rays to two camera centres (3,)."""
    r1 = xyz_world - center1
    r2 = xyz_world - center2
    den = np.linalg.norm(r1, axis=1) * np.linalg.norm(r2, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.einsum("ij,ij->i", r1, r2) / den, dtype=np.float64)


def parallax_deg(xyz_world: Array, center1: Array, center2: Array) -> Array:
    """Parallax angle (N,) in degrees at each point (N, 3) between two camera centres (3,)."""
    c = np.clip(parallax_cos(xyz_world, center1, center2), -1.0, 1.0)
    return np.asarray(np.degrees(np.arccos(c)), dtype=np.float64)


def depths(T_cam_world: Array, xyz_world: Array) -> Array:
    """Depth z (N,) in the camera of ``T_cam_world`` (4x4) of world points (N, 3)."""
    return np.asarray(xyz_world @ T_cam_world[2, :3] + T_cam_world[2, 3], dtype=np.float64)


def in_front(T_cam_world: Array, xyz_world: Array, min_depth: float = 0.0) -> BoolArray:
    """Mask (N,) of world points (N, 3) with depth greater than ``min_depth`` (metres)."""
    with np.errstate(invalid="ignore"):
        return np.asarray(depths(T_cam_world, xyz_world) > min_depth)


def reprojection_errors(T_cam_world: Array, K: Array, xyz_world: Array, uv: Array) -> Array:
    """Euclidean reprojection errors (N,) in pixels of world points (N, 3) against ``uv`` (N, 2).

    Points behind the camera get ``inf``; non-finite inputs give NaN.
    """
    xyz_cam = xyz_world @ T_cam_world[:3, :3].T + T_cam_world[:3, 3]
    z = xyz_cam[:, 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        u = K[0, 0] * xyz_cam[:, 0] / z + K[0, 1] * xyz_cam[:, 1] / z + K[0, 2]
        v = K[1, 1] * xyz_cam[:, 1] / z + K[1, 2]
        err = np.hypot(u - uv[:, 0], v - uv[:, 1])
        err = np.where(z > 0.0, err, np.inf)
    return np.asarray(np.where(np.isfinite(z), err, np.nan), dtype=np.float64)


def triangulate_points(
    T_cam1_world: Array,
    T_cam2_world: Array,
    K: Array,
    uv1: Array,
    uv2: Array,
    *,
    sigma1: Array | float | None = 1.0,
    sigma2: Array | float | None = 1.0,
    chi2_th: float = CHI2_2DOF_95,
    min_parallax_deg: float = 1.0,
    K2: Array | None = None,
) -> tuple[Array, BoolArray]:
    """Triangulate new map points from two posed views and keep the trustworthy ones.

    ``uv1``, ``uv2`` are (N, 2) ideal pixels; ``sigma1``, ``sigma2`` the pixel noise
    std (scalar or (N,), e.g. from the pyramid level); ``None`` skips the reprojection
    test in that view. ``K2`` defaults to ``K``. A point is valid when finite, in front
    of both cameras, with squared reprojection error / sigma^2 below ``chi2_th`` in each
    view and a parallax angle of at least ``min_parallax_deg``.

    Returns ``(xyz_world (N, 3), valid (N,))``; invalid rows may hold any value (NaN).
    """
    uv1 = _as_points(uv1, 2, "uv1")
    uv2 = _as_points(uv2, 2, "uv2")
    K1 = np.asarray(K, dtype=np.float64)
    K2 = K1 if K2 is None else np.asarray(K2, dtype=np.float64)
    if len(uv1) == 0:
        return np.zeros((0, 3)), np.zeros(0, dtype=bool)
    xyz = triangulate_dlt(
        projection_matrix(K1, T_cam1_world), projection_matrix(K2, T_cam2_world), uv1, uv2
    )
    valid = np.isfinite(xyz).all(axis=1)
    valid &= in_front(T_cam1_world, xyz) & in_front(T_cam2_world, xyz)
    cos_min = np.cos(np.radians(min_parallax_deg))
    with np.errstate(invalid="ignore"):
        pc = parallax_cos(xyz, camera_center(T_cam1_world), camera_center(T_cam2_world))
        valid &= pc < cos_min
        for T, Kc, uv, sigma in ((T_cam1_world, K1, uv1, sigma1), (T_cam2_world, K2, uv2, sigma2)):
            if sigma is None:
                continue
            err = reprojection_errors(T, Kc, xyz, uv)
            valid &= err**2 < chi2_th * np.asarray(sigma, dtype=np.float64) ** 2
    return xyz, np.asarray(valid)

"""Camera pose from 3-D / 2-D correspondences: OpenCV RANSAC PnP plus our own robust LM.

``xyz_world`` are (N, 3) map points in metres, ``uv`` (N, 2) ideal (undistorted)
pixels, ``K`` the 3x3 intrinsics; poses are ``T_cam_world`` (4x4, ``x ~ K [R|T] X``).
The LM refinement perturbs on the left, ``T <- exp(xi) T`` with ``xi = [rho, phi]``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from slam.errors import GeometryError
from slam.geometry.lie import make_pose, se3_exp

log = logging.getLogger(__name__)

Array = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

_METHODS = {"sqpnp": cv2.SOLVEPNP_SQPNP, "epnp": cv2.SOLVEPNP_EPNP}
_MIN_DEPTH = 1e-6
_BEHIND_PENALTY_PX = 1e3


@dataclass(frozen=True)
class PnPResult:
    """Pose ``T_cam_world`` (4x4) and inlier mask (N,) of the correspondences."""

    T_cam_world: Array
    inliers: BoolArray

    @property
    def n_inliers(self) -> int:
        """Number of inlier correspondences."""
        return int(self.inliers.sum())


def _check_inputs(xyz_world: Array, uv: Array, min_n: int) -> tuple[Array, Array]:
    xyz = np.asarray(xyz_world, dtype=np.float64)
    px = np.asarray(uv, dtype=np.float64)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or px.ndim != 2 or px.shape[1] != 2:
        raise GeometryError(f"need xyz (N, 3) and uv (N, 2), got {xyz.shape}, {px.shape}")
    if len(xyz) != len(px):
        raise GeometryError(f"xyz and uv differ in length: {len(xyz)} vs {len(px)}")
    if len(xyz) < min_n:
        raise GeometryError(f"need at least {min_n} correspondences, got {len(xyz)}")
    if not (np.isfinite(xyz).all() and np.isfinite(px).all()):
        raise GeometryError("correspondences contain NaN or inf")
    return xyz, px


def _project(T: Array, xyz: Array, K: Array) -> tuple[Array, Array]:
    """Camera points (N, 3) and pixels (N, 2) of world points under ``T_cam_world``."""
    xyz_cam = xyz @ T[:3, :3].T + T[:3, 3]
    z = np.where(xyz_cam[:, 2] > _MIN_DEPTH, xyz_cam[:, 2], np.nan)
    u = K[0, 0] * xyz_cam[:, 0] / z + K[0, 1] * xyz_cam[:, 1] / z + K[0, 2]
    v = K[1, 1] * xyz_cam[:, 1] / z + K[1, 2]
    return xyz_cam, np.stack([u, v], axis=1)


def reprojection_errors_px(T_cam_world: Array, xyz_world: Array, uv: Array, K: Array) -> Array:
    """Reprojection error norms (N,) in pixels; ``inf`` for points behind the camera."""
    _, proj = _project(T_cam_world, xyz_world, K)
    err = np.linalg.norm(proj - uv, axis=1)
    return np.asarray(np.where(np.isfinite(err), err, np.inf), dtype=np.float64)


def _robust_cost(err: Array, huber_px: float | None) -> float:
    """Sum of Huber costs (``e^2`` inside, ``2 k e - k^2`` outside) of error norms (N,)."""
    e = np.where(np.isfinite(err), err, _BEHIND_PENALTY_PX)
    if huber_px is None:
        return float((e * e).sum())
    k = huber_px
    return float(np.where(e <= k, e * e, 2.0 * k * e - k * k).sum())


def _jacobian(xyz_cam: Array, K: Array) -> Array:
    """Jacobians (N, 2, 6) of pixels w.r.t. a left perturbation ``[rho, phi]``."""
    x, y, z = xyz_cam[:, 0], xyz_cam[:, 1], xyz_cam[:, 2]
    iz = 1.0 / z
    Jp = np.zeros((len(z), 2, 3))
    Jp[:, 0, 0] = K[0, 0] * iz
    Jp[:, 0, 1] = K[0, 1] * iz
    Jp[:, 0, 2] = -(K[0, 0] * x + K[0, 1] * y) * iz * iz
    Jp[:, 1, 1] = K[1, 1] * iz
    Jp[:, 1, 2] = -K[1, 1] * y * iz * iz
    J = np.empty((len(z), 2, 6))
    J[:, :, :3] = Jp
    # d(exp(phi) X)/dphi = -[X]x, and a^T (-[X]x) = (X x a)^T.
    J[:, :, 3:] = np.cross(xyz_cam[:, None, :], Jp)
    return J


def refine_pose_lm(
    T_cam_world: Array,
    xyz_world: Array,
    uv: Array,
    K: Array,
    *,
    huber_px: float | None = 2.45,
    iterations: int = 20,
    tol: float = 1e-10,
) -> Array:
    """Levenberg-Marquardt pose refinement minimising (Huber-robust) pixel errors.

    ``huber_px`` is the Huber threshold on each point's error norm in pixels (None
    for plain least squares). Points behind the camera get no weight. Returns the
    refined ``T_cam_world`` (4x4); raises :class:`GeometryError` on malformed input.
    """
    xyz, px = _check_inputs(xyz_world, uv, 3)
    K = np.asarray(K, dtype=np.float64)
    T = np.asarray(T_cam_world, dtype=np.float64).copy()
    xyz_cam, proj = _project(T, xyz, K)
    cost = _robust_cost(np.linalg.norm(proj - px, axis=1), huber_px)
    lam = 1e-3
    for _ in range(iterations):
        r = proj - px
        e = np.linalg.norm(r, axis=1)
        ok = np.isfinite(e)
        w = np.ones_like(e) if huber_px is None else huber_px / np.maximum(e, huber_px)
        w = np.where(ok, w, 0.0)
        r = np.where(ok[:, None], r, 0.0)
        J = _jacobian(np.where(ok[:, None], xyz_cam, 1.0), K)
        H = np.einsum("nki,n,nkj->ij", J, w, J)
        g = np.einsum("nki,n,nk->i", J, w, r)
        improved = False
        while lam < 1e10:
            A = H + lam * np.diag(np.maximum(np.diag(H), 1e-9))
            dx = -np.linalg.solve(A, g)
            T_new = se3_exp(dx) @ T
            xyz_new, proj_new = _project(T_new, xyz, K)
            cost_new = _robust_cost(np.linalg.norm(proj_new - px, axis=1), huber_px)
            if cost_new <= cost:
                T, xyz_cam, proj, improved = T_new, xyz_new, proj_new, True
                lam = max(lam * 0.1, 1e-9)
                break
            lam *= 10.0
        if not improved or float(np.abs(dx).max()) < tol or cost - cost_new < tol * cost:
            break
        cost = cost_new
    return T


def solve_pnp_ransac(
    xyz_world: Array,
    uv: Array,
    K: Array,
    *,
    reproj_px: float = 2.45,
    iterations: int = 100,
    confidence: float = 0.99,
    method: Literal["sqpnp", "epnp"] = "sqpnp",
    min_inliers: int = 10,
    refine: bool = True,
    seed: int | None = None,
) -> PnPResult | None:
    """Robust pose from N >= 6 correspondences: ``cv2.solvePnPRansac`` then :func:`refine_pose_lm`.

    ``uv`` must already be undistorted (no distortion is passed to OpenCV).
    Inliers are re-evaluated after refinement: reprojection error below
    ``reproj_px`` pixels and positive depth. ``seed`` seeds OpenCV's global RNG.
    Returns None if RANSAC fails or fewer than ``min_inliers`` inliers remain;
    raises :class:`GeometryError` on malformed input.
    """
    xyz, px = _check_inputs(xyz_world, uv, 6)
    if method not in _METHODS:
        raise GeometryError(f"unknown PnP method {method!r}; use one of {sorted(_METHODS)}")
    K = np.asarray(K, dtype=np.float64)
    if seed is not None:
        cv2.setRNGSeed(int(seed))
    ok, rvec, tvec, idx = cv2.solvePnPRansac(
        xyz.reshape(-1, 1, 3), px.reshape(-1, 1, 2), K, None,
        iterationsCount=iterations, reprojectionError=reproj_px,
        confidence=confidence, flags=_METHODS[method],
    )  # fmt: skip
    if not ok or idx is None or len(idx) < max(min_inliers, 3):
        log.debug("PnP RANSAC failed (%s inliers)", None if idx is None else len(idx))
        return None
    R = np.asarray(cv2.Rodrigues(rvec)[0], dtype=np.float64)
    T = make_pose(R, np.asarray(tvec, dtype=np.float64).reshape(3))
    if refine:
        inl = np.zeros(len(xyz), dtype=bool)
        inl[idx.ravel()] = True
        T = refine_pose_lm(T, xyz[inl], px[inl], K, huber_px=reproj_px)
    inliers = reprojection_errors_px(T, xyz, px, K) < reproj_px
    if inliers.sum() < min_inliers:
        return None
    return PnPResult(T, np.asarray(inliers))

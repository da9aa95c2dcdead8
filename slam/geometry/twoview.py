"""Two-view pose recovery: E / H decompositions, cheirality vote, monocular initialisation.

Conventions as in :mod:`slam.geometry.epipolar`: ``uv1``, ``uv2`` are (N, 2) ideal pixels,
``xn1``, ``xn2`` (N, 2) normalised coordinates. Recovered motions are
``X_cam2 = R X_cam1 + t`` (i.e. ``T_cam2_cam1 = [R | t]``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from slam.errors import GeometryError
from slam.geometry.epipolar import SET_SIZE, Rng, _check_pair, _homog, _select
from slam.geometry.lie import make_pose
from slam.geometry.triangulation import parallax_cos, triangulate_dlt

log = logging.getLogger(__name__)

Array = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


@dataclass(frozen=True)
class PoseRecovery:
    """Motion ``X2 = R X1 + t`` chosen by cheirality, with its triangulated points.

    ``xyz_cam1`` (N, 3) is NaN where ``good`` (N,) is False; ``good`` marks points in
    front of both cameras, with small reprojection error and enough parallax.
    ``n_good`` counts points passing cheirality and reprojection (any parallax).
    """

    R: Array
    t: Array
    xyz_cam1: Array
    good: BoolArray
    parallax_deg: float
    n_good: int


@dataclass(frozen=True)
class TwoViewResult:
    """Monocular initialisation: ``T_cam2_cam1`` (4x4, ``|t| = 1``) and points in camera 1.

    ``xyz_cam1`` (N, 3) holds the points of all input correspondences, NaN where
    ``good`` (N,) is False. ``parallax_deg`` is ORB-SLAM's robust parallax (the
    ~50th largest parallax angle of the triangulated points).
    """

    T_cam2_cam1: Array
    xyz_cam1: Array
    good: BoolArray
    model: Literal["F", "H"]
    parallax_deg: float


# ----------------------------------------------------------------------------- pose recovery

_COS_LOW_PARALLAX = 0.99998  # ORB-SLAM: below ~0.36 deg a point's depth sign is unreliable


def decompose_essential(E: Array) -> list[tuple[Array, Array]]:
    """The four motions ``(R (3x3), t (3,), |t| = 1)`` compatible with an essential matrix."""
    E = np.asarray(E, dtype=np.float64)
    if E.shape != (3, 3) or not np.isfinite(E).all():
        raise GeometryError("essential matrix must be a finite 3x3 array")
    U, _, Vt = np.linalg.svd(E)
    if np.linalg.det(U) < 0:
        U = -U
    if np.linalg.det(Vt) < 0:
        Vt = -Vt
    W = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    R1, R2 = U @ W @ Vt, U @ W.T @ Vt
    t = U[:, 2] / np.linalg.norm(U[:, 2])
    return [(R1, t), (R1, -t), (R2, t), (R2, -t)]


def decompose_homography(H: Array, K: Array) -> list[tuple[Array, Array, Array]]:
    """Motions ``(R, t / d, n)`` of a pixel homography (3x3) with intrinsics ``K`` (3x3).

    ``n`` (3,) is the plane normal in camera 1 and ``d`` its distance, so ``t`` is
    in units of ``d``. Pass ``K = I`` for a homography on normalised coordinates.
    """
    H = np.asarray(H, dtype=np.float64)
    if H.shape != (3, 3) or not np.isfinite(H).all():
        raise GeometryError("homography must be a finite 3x3 array")
    _, Rs, ts, ns = cv2.decomposeHomographyMat(H, np.asarray(K, dtype=np.float64))
    return [
        (
            np.asarray(R, dtype=np.float64),
            np.asarray(t, dtype=np.float64).reshape(3),
            np.asarray(n, dtype=np.float64).reshape(3),
        )
        for R, t, n in zip(Rs, ts, ns)
    ]


def _check_motion(
    R: Array, t: Array, xn1: Array, xn2: Array, focal: Array, reproj_px: float
) -> tuple[Array, BoolArray, BoolArray, Array]:
    """Triangulate under ``(R, t)``; return xyz (N, 3), pass mask, good mask, parallax cos."""
    P1 = np.hstack([np.eye(3), np.zeros((3, 1))])
    P2 = np.hstack([R, t.reshape(3, 1)])
    xyz = triangulate_dlt(P1, P2, xn1, xn2)
    xyz2 = xyz @ R.T + t
    cos_p = parallax_cos(xyz, np.zeros(3), -R.T @ t)
    with np.errstate(invalid="ignore", divide="ignore"):
        low = cos_p >= _COS_LOW_PARALLAX
        ok = np.isfinite(xyz).all(axis=1) & ((xyz[:, 2] > 0) | low) & ((xyz2[:, 2] > 0) | low)
        for X, xn in ((xyz, xn1), (xyz2, xn2)):
            err2 = ((((X[:, :2] / X[:, 2:]) - xn) * focal) ** 2).sum(axis=1)
            ok &= err2 <= reproj_px**2
    return xyz, np.asarray(ok), np.asarray(ok & ~low), cos_p


def _choose_motion(
    motions: list[tuple[Array, Array]],
    xn1: Array,
    xn2: Array,
    focal_px: float | tuple[float, float],
    reproj_px: float,
    min_parallax_deg: float,
    min_triangulated: int,
    min_good_ratio: float,
    similar_ratio: float,
) -> PoseRecovery | None:
    """ORB-SLAM cheirality vote: a clear winner with enough points and parallax, or None."""
    xn1, xn2 = _check_pair(xn1, xn2, 1)
    focal = np.broadcast_to(np.asarray(focal_px, dtype=np.float64), (2,))
    checks = [_check_motion(R, t, xn1, xn2, focal, reproj_px) for R, t in motions]
    counts = np.array([int(c[1].sum()) for c in checks])
    best = int(np.argmax(counts))
    n_best = int(counts[best])
    others = np.delete(counts, best)
    if n_best < max(min_good_ratio * len(xn1), min_triangulated):
        log.debug("pose recovery: %d good of %d, too few", n_best, len(xn1))
        return None
    if others.size and others.max() >= similar_ratio * n_best:
        log.debug("pose recovery ambiguous: counts %s", counts.tolist())
        return None
    xyz, ok, good, cos_p = checks[best]
    cos_sorted = np.sort(cos_p[ok])
    cos_rob = cos_sorted[min(50, len(cos_sorted) - 1)]
    parallax = float(np.degrees(np.arccos(np.clip(cos_rob, -1.0, 1.0))))
    if parallax < min_parallax_deg:
        log.debug("pose recovery: parallax %.2f deg too low", parallax)
        return None
    R, t = motions[best]
    xyz = np.where(good[:, None], xyz, np.nan)
    return PoseRecovery(R, t, xyz, good, parallax, n_best)


def recover_pose_from_essential(
    E: Array,
    xn1: Array,
    xn2: Array,
    *,
    focal_px: float | tuple[float, float] = 1.0,
    reproj_px: float = 2.0,
    min_parallax_deg: float = 1.0,
    min_triangulated: int = 50,
    min_good_ratio: float = 0.9,
) -> PoseRecovery | None:
    """Pick the motion (``|t| = 1``) of ``E`` that puts the points (N, 2) in front.

    Reprojection errors are measured in pixels, ``focal_px`` times the normalised
    error. Returns None unless one motion triangulates at least
    ``max(min_good_ratio * N, min_triangulated)`` points, every other motion fewer
    than 0.7 times as many, with a robust parallax of ``min_parallax_deg`` or more.
    """
    return _choose_motion(
        decompose_essential(E), xn1, xn2, focal_px, reproj_px,
        min_parallax_deg, min_triangulated, min_good_ratio, 0.7,
    )  # fmt: skip


def recover_pose_from_homography(
    Hn: Array,
    xn1: Array,
    xn2: Array,
    *,
    focal_px: float | tuple[float, float] = 1.0,
    reproj_px: float = 2.0,
    min_parallax_deg: float = 1.0,
    min_triangulated: int = 50,
    min_good_ratio: float = 0.9,
) -> PoseRecovery | None:
    """Like :func:`recover_pose_from_essential` for a homography on normalised coordinates.

    ``Hn = K^-1 H K``; ``t`` comes out in units of the plane distance. The runner-up
    motion must triangulate fewer than 0.75 times the winner's points.
    """
    motions = [(R, t) for R, t, _ in decompose_homography(Hn, np.eye(3))]
    return _choose_motion(
        motions, xn1, xn2, focal_px, reproj_px,
        min_parallax_deg, min_triangulated, min_good_ratio, 0.75,
    )  # fmt: skip


def initialize_two_view(
    uv1: Array,
    uv2: Array,
    K: Array,
    rng: Rng = None,
    *,
    sigma: float = 1.0,
    iterations: int = 200,
    rh_threshold: float = 0.45,
    min_parallax_deg: float = 1.0,
    min_triangulated: int = 50,
) -> TwoViewResult | None:
    """Monocular map initialisation from ideal pixel correspondences (N, 2), ORB-SLAM style.

    Selects F or H, recovers the motion by cheirality and triangulates. The baseline
    is scaled to 1. Returns None when no reliable initialisation exists (ambiguous
    motion, too little parallax, too few points); raises :class:`GeometryError` on
    malformed or degenerate input (N < 8, non-finite, coincident points).
    """
    uv1, uv2 = _check_pair(uv1, uv2, SET_SIZE)
    K = np.asarray(K, dtype=np.float64)
    sel = _select(uv1, uv2, sigma, iterations, rng, rh_threshold)
    if sel is None:
        return None
    K_inv = np.linalg.inv(K)
    idx = np.flatnonzero(sel.inliers)
    xn1 = (_homog(uv1[idx]) @ K_inv.T)[:, :2]
    xn2 = (_homog(uv2[idx]) @ K_inv.T)[:, :2]
    if sel.model == "F":
        motions, similar = decompose_essential(K.T @ sel.matrix @ K), 0.7
    else:
        motions = [(R, t) for R, t, _ in decompose_homography(sel.matrix, K)]
        similar = 0.75
    focal = (float(K[0, 0]), float(K[1, 1]))
    rec = _choose_motion(
        motions, xn1, xn2, focal, 2.0 * sigma, min_parallax_deg, min_triangulated, 0.9, similar
    )
    if rec is None:
        return None
    baseline = float(np.linalg.norm(rec.t))
    if not baseline > 1e-9:
        return None
    xyz = np.full((len(uv1), 3), np.nan)
    good = np.zeros(len(uv1), dtype=bool)
    xyz[idx] = rec.xyz_cam1 / baseline
    good[idx] = rec.good
    T = make_pose(rec.R, rec.t / baseline)
    return TwoViewResult(T, xyz, good, sel.model, rec.parallax_deg)

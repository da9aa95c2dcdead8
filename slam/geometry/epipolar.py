"""Epipolar geometry: F / E / H estimation, ORB-SLAM scoring, RANSAC and model selection.

Conventions: correspondences ``uv1``, ``uv2`` are (N, 2) ideal (undistorted) pixels in
images 1 and 2; ``xn1``, ``xn2`` are (N, 2) normalised coordinates ``K^-1 [u v 1]``.
``F`` and ``E`` satisfy ``x2^T F x1 = 0``; ``H`` maps image 1 to image 2, ``x2 ~ H x1``.

The RANSAC scheme follows ORB-SLAM's initialiser: the same random sets of eight
correspondences feed both models; each hypothesis is scored with
``sum(th_score - chi2)`` over both images, ``chi2 = d^2 / sigma^2``. Pose recovery from
the selected model lives in :mod:`slam.geometry.twoview`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from slam.errors import GeometryError

log = logging.getLogger(__name__)

Array = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.int64]
Rng = np.random.Generator | int | None

CHI2_1DOF = 3.841
CHI2_2DOF = 5.991
SET_SIZE = 8


@dataclass(frozen=True)
class RansacResult:
    """Best model (3x3, pixels), its inlier mask (N,) and its ORB-SLAM score."""

    matrix: Array
    inliers: BoolArray
    score: float


@dataclass(frozen=True)
class ModelSelection:
    """Outcome of the F vs H choice: ``ratio_h = SH / (SH + SF)``."""

    model: Literal["F", "H"]
    matrix: Array
    inliers: BoolArray
    score: float
    ratio_h: float


# ----------------------------------------------------------------------------- inputs


def _check_pair(uv1: Array, uv2: Array, min_n: int) -> tuple[Array, Array]:
    """Validated float64 (N, 2) copies of a correspondence set, or GeometryError."""
    a = np.asarray(uv1, dtype=np.float64)
    b = np.asarray(uv2, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 2 or a.shape != b.shape:
        raise GeometryError(f"correspondences must be two (N, 2) arrays, got {a.shape}, {b.shape}")
    if len(a) < min_n:
        raise GeometryError(f"need at least {min_n} correspondences, got {len(a)}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise GeometryError("correspondences contain NaN or inf")
    return a, b


def _normalization(uv: Array) -> Array:
    """Hartley similarity (3x3): centroid to origin, mean distance sqrt(2)."""
    mean = uv.mean(axis=0)
    mean_dist = float(np.linalg.norm(uv - mean, axis=1).mean())
    if not mean_dist > 1e-9 * max(1.0, float(np.abs(mean).max())):
        raise GeometryError("degenerate correspondences: all points coincide")
    s = np.sqrt(2.0) / mean_dist
    return np.array([[s, 0.0, -s * mean[0]], [0.0, s, -s * mean[1]], [0.0, 0.0, 1.0]])


def _apply(T: Array, uv: Array) -> Array:
    return np.asarray(uv @ T[:2, :2].T + T[:2, 2], dtype=np.float64)


def _homog(uv: Array) -> Array:
    return np.concatenate([uv, np.ones((len(uv), 1))], axis=1)


# ----------------------------------------------------------------------------- solvers


def _null_vectors(A: Array) -> Array:
    """Right singular vectors (B, 3, 3) of the smallest singular value of A (B, M, 9)."""
    if A.shape[-2] > 2 * A.shape[-1]:
        # Tall systems (refits on all inliers): the 9x9 normal matrix has the same null
        # vector and is far cheaper; Hartley normalisation keeps it well conditioned.
        _, V = np.linalg.eigh(A.transpose(0, 2, 1) @ A)
        return np.asarray(V[:, :, 0].reshape(-1, 3, 3), dtype=np.float64)
    _, _, Vt = np.linalg.svd(A, full_matrices=True)
    return np.asarray(Vt[:, -1, :].reshape(-1, 3, 3), dtype=np.float64)


def _fundamental_batch(x1: Array, x2: Array, w: Array | None = None) -> Array:
    """Rank-2 F (B, 3, 3) from (already normalised) point sets (B, M, 2), M >= 8.

    ``w`` (B, M) optionally weights the equations (Sampson reweighting).
    """
    u1, v1, u2, v2 = x1[..., 0], x1[..., 1], x2[..., 0], x2[..., 1]
    one = np.ones_like(u1)
    A = np.stack([u2 * u1, u2 * v1, u2, v2 * u1, v2 * v1, v2, u1, v1, one], axis=-1)
    F = _null_vectors(A if w is None else A * w[..., None])
    U, S, Vt = np.linalg.svd(F)
    S[:, 2] = 0.0
    return np.asarray(U @ (S[:, :, None] * Vt), dtype=np.float64)


def _homography_batch(x1: Array, x2: Array) -> Array:
    """H (B, 3, 3), ``x2 ~ H x1``, from (normalised) point sets (B, M, 2), M >= 4."""
    u1, v1, u2, v2 = x1[..., 0], x1[..., 1], x2[..., 0], x2[..., 1]
    z, one = np.zeros_like(u1), np.ones_like(u1)
    r1 = np.stack([z, z, z, -u1, -v1, -one, v2 * u1, v2 * v1, v2], axis=-1)
    r2 = np.stack([u1, v1, one, z, z, z, -u2 * u1, -u2 * v1, -u2], axis=-1)
    return _null_vectors(np.concatenate([r1, r2], axis=1))


def _fundamental_sampson(x1: Array, x2: Array, iterations: int = 3) -> Array:
    """F (3, 3) of normalised sets (M, 2), reweighted towards the Sampson (first-order) error."""
    F = _fundamental_batch(x1[None], x2[None])[0]
    h1, h2 = _homog(x1), _homog(x2)
    for _ in range(iterations):
        l2, l1 = h1 @ F.T, h2 @ F
        den = l2[:, 0] ** 2 + l2[:, 1] ** 2 + l1[:, 0] ** 2 + l1[:, 1] ** 2
        w = 1.0 / np.sqrt(np.maximum(den, 1e-12 * float(den.max())))
        F = _fundamental_batch(x1[None], x2[None], w[None])[0]
    return F


def _scale_h(H: Array) -> Array:
    """Homography scaled to ``H[2, 2] = 1`` where possible, else to unit Frobenius norm."""
    H = H / np.linalg.norm(H)
    return H / H[2, 2] if abs(H[2, 2]) > 1e-8 else H


def fundamental_8point(uv1: Array, uv2: Array) -> Array:
    """Normalised eight-point fundamental matrix (3x3, rank 2, unit norm) of N >= 8 pairs."""
    uv1, uv2 = _check_pair(uv1, uv2, SET_SIZE)
    T1, T2 = _normalization(uv1), _normalization(uv2)
    Fn = _fundamental_batch(_apply(T1, uv1)[None], _apply(T2, uv2)[None])[0]
    F = T2.T @ Fn @ T1
    return np.asarray(F / np.linalg.norm(F), dtype=np.float64)


def essential_8point(xn1: Array, xn2: Array) -> Array:
    """Essential matrix (3x3, singular values (1, 1, 0)) from N >= 8 normalised pairs."""
    F = fundamental_8point(xn1, xn2)
    U, _, Vt = np.linalg.svd(F)
    return np.asarray(U @ np.diag([1.0, 1.0, 0.0]) @ Vt, dtype=np.float64)


def homography_dlt(uv1: Array, uv2: Array) -> Array:
    """Normalised DLT homography ``x2 ~ H x1`` (3x3, ``H[2,2] = 1``) of N >= 4 pairs."""
    uv1, uv2 = _check_pair(uv1, uv2, 4)
    T1, T2 = _normalization(uv1), _normalization(uv2)
    Hn = _homography_batch(_apply(T1, uv1)[None], _apply(T2, uv2)[None])[0]
    return _scale_h(np.linalg.inv(T2) @ Hn @ T1)


# ----------------------------------------------------------------------------- scoring


def _sum_scores(chi_a: Array, chi_b: Array, th: float, th_score: float) -> Array:
    """ORB-SLAM score (B,) of chi2 errors (B, N) in both images."""
    with np.errstate(invalid="ignore"):
        sa = np.where(chi_a <= th, th_score - chi_a, 0.0).sum(axis=1)
        sb = np.where(chi_b <= th, th_score - chi_b, 0.0).sum(axis=1)
    return np.asarray(sa + sb, dtype=np.float64)


def score_fundamental(F: Array, uv1: Array, uv2: Array, sigma: float = 1.0) -> tuple[Array, Array]:
    """Scores (B,) and inlier masks (B, N) of fundamental matrices F (B, 3, 3).

    Squared point-to-epipolar-line distances over ``sigma^2`` are tested against
    3.841 and scored with ``5.991 - chi2`` in each image.
    """
    x1, x2 = _homog(uv1), _homog(uv2)
    l2 = x1 @ F.transpose(0, 2, 1)  # (B, N, 3) epipolar lines in image 2
    l1 = x2 @ F  # (B, N, 3) epipolar lines in image 1
    num2 = (l2 * x2).sum(axis=2) ** 2
    inv_s2 = 1.0 / sigma**2
    with np.errstate(invalid="ignore", divide="ignore"):
        chi2 = num2 / (l2[..., 0] ** 2 + l2[..., 1] ** 2) * inv_s2
        chi1 = num2 / (l1[..., 0] ** 2 + l1[..., 1] ** 2) * inv_s2
        inliers = (chi1 <= CHI2_1DOF) & (chi2 <= CHI2_1DOF)
    return _sum_scores(chi1, chi2, CHI2_1DOF, CHI2_2DOF), np.asarray(inliers)


def _transfer_chi2(H: Array, x_from: Array, uv_to: Array) -> Array:
    p = x_from @ H.transpose(0, 2, 1)  # (B, N, 3)
    with np.errstate(invalid="ignore", divide="ignore"):
        du = p[..., 0] / p[..., 2] - uv_to[:, 0]
        dv = p[..., 1] / p[..., 2] - uv_to[:, 1]
    return np.asarray(du * du + dv * dv, dtype=np.float64)


def score_homography(H: Array, uv1: Array, uv2: Array, sigma: float = 1.0) -> tuple[Array, Array]:
    """Scores (B,) and inlier masks (B, N) of homographies H (B, 3, 3), ``x2 ~ H x1``.

    Symmetric transfer errors over ``sigma^2`` are tested against 5.991 per image.
    """
    H = np.array(H, dtype=np.float64)
    scale = np.linalg.norm(H, axis=(1, 2))
    det = np.linalg.det(H / scale[:, None, None])
    singular = ~(np.abs(det) > 1e-12)
    H[singular] = np.eye(3)
    H_inv = np.asarray(np.linalg.inv(H), dtype=np.float64)
    inv_s2 = 1.0 / sigma**2
    chi2 = _transfer_chi2(H, _homog(uv1), uv2) * inv_s2
    chi1 = _transfer_chi2(H_inv, _homog(uv2), uv1) * inv_s2
    with np.errstate(invalid="ignore"):
        inliers = (chi1 <= CHI2_2DOF) & (chi2 <= CHI2_2DOF)
    score = _sum_scores(chi1, chi2, CHI2_2DOF, CHI2_2DOF)
    score[singular] = -np.inf
    inliers[singular] = False
    return score, np.asarray(inliers)


# ----------------------------------------------------------------------------- RANSAC


def ransac_sets(n: int, iterations: int, rng: Rng = None) -> IntArray:
    """Random index sets (iterations, 8), each without repetition, out of ``n >= 8``."""
    if n < SET_SIZE:
        raise GeometryError(f"need at least {SET_SIZE} correspondences, got {n}")
    gen = np.random.default_rng(rng)
    keys = gen.random((iterations, n))
    return np.asarray(np.argpartition(keys, SET_SIZE - 1, axis=1)[:, :SET_SIZE], dtype=np.int64)


def _ransac(
    kind: Literal["F", "H"],
    uv1: Array,
    uv2: Array,
    sigma: float,
    iterations: int,
    rng: Rng,
    sets: IntArray | None,
    refine: bool,
) -> RansacResult:
    uv1, uv2 = _check_pair(uv1, uv2, SET_SIZE)
    T1, T2 = _normalization(uv1), _normalization(uv2)
    x1, x2 = _apply(T1, uv1), _apply(T2, uv2)
    idx = ransac_sets(len(uv1), iterations, rng) if sets is None else np.asarray(sets)

    def fit(a: Array, b: Array) -> Array:
        if kind == "F":
            return np.asarray(T2.T @ _fundamental_batch(a, b) @ T1, dtype=np.float64)
        return np.asarray(np.linalg.inv(T2) @ _homography_batch(a, b) @ T1, dtype=np.float64)

    score_fn = score_fundamental if kind == "F" else score_homography
    models = fit(x1[idx], x2[idx])
    scores, inliers = score_fn(models, uv1, uv2, sigma)
    best = int(np.argmax(scores))
    M, s, inl = models[best], float(scores[best]), inliers[best]
    if refine and inl.sum() > SET_SIZE:
        if kind == "F":
            M2 = (T2.T @ _fundamental_sampson(x1[inl], x2[inl]) @ T1)[None]
        else:
            M2 = fit(x1[inl][None], x2[inl][None])
        s2, inl2 = score_fn(M2, uv1, uv2, sigma)
        if s2[0] >= s:
            M, s, inl = M2[0], float(s2[0]), inl2[0]
    M = M / np.linalg.norm(M) if kind == "F" else _scale_h(M)
    return RansacResult(np.asarray(M, dtype=np.float64), np.asarray(inl), max(s, 0.0))


def ransac_fundamental(
    uv1: Array,
    uv2: Array,
    *,
    sigma: float = 1.0,
    iterations: int = 200,
    rng: Rng = None,
    sets: IntArray | None = None,
    refine: bool = True,
) -> RansacResult:
    """RANSAC eight-point F of pixel correspondences (N >= 8, N, 2).

    ``sets`` (iterations, 8) overrides the random sets (to share them with H);
    ``refine`` refits on all inliers (Sampson-reweighted eight-point) and keeps the
    refit if it scores no worse.
    """
    return _ransac("F", uv1, uv2, sigma, iterations, rng, sets, refine)


def ransac_homography(
    uv1: Array,
    uv2: Array,
    *,
    sigma: float = 1.0,
    iterations: int = 200,
    rng: Rng = None,
    sets: IntArray | None = None,
    refine: bool = True,
) -> RansacResult:
    """RANSAC eight-point DLT homography ``x2 ~ H x1`` of pixel correspondences (N, 2)."""
    return _ransac("H", uv1, uv2, sigma, iterations, rng, sets, refine)


def _select(
    uv1: Array, uv2: Array, sigma: float, iterations: int, rng: Rng, rh_threshold: float
) -> ModelSelection | None:
    uv1, uv2 = _check_pair(uv1, uv2, SET_SIZE)
    sets = ransac_sets(len(uv1), iterations, rng)
    res_h = ransac_homography(uv1, uv2, sigma=sigma, sets=sets)
    res_f = ransac_fundamental(uv1, uv2, sigma=sigma, sets=sets)
    total = res_h.score + res_f.score
    if not total > 0.0:
        return None
    ratio = res_h.score / total
    log.debug("model selection SH=%.1f SF=%.1f RH=%.3f", res_h.score, res_f.score, ratio)
    best = res_h if ratio > rh_threshold else res_f
    model: Literal["F", "H"] = "H" if ratio > rh_threshold else "F"
    return ModelSelection(model, best.matrix, best.inliers, best.score, ratio)


def select_model(
    uv1: Array,
    uv2: Array,
    *,
    sigma: float = 1.0,
    iterations: int = 200,
    rng: Rng = None,
    rh_threshold: float = 0.45,
) -> ModelSelection:
    """Fit F and H on shared RANSAC sets and pick H if ``SH / (SH + SF) > rh_threshold``.

    Raises :class:`GeometryError` on malformed or degenerate input or if neither
    model has any support.
    """
    sel = _select(uv1, uv2, sigma, iterations, rng, rh_threshold)
    if sel is None:
        raise GeometryError("neither a homography nor a fundamental matrix has support")
    return sel

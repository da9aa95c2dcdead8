"""Sim(3) / SE(3) alignment of two keyframes from matched map points.

Similarities are 4x4 ``S = [[s R, t], [0, 1]]``; ``S_cam1_cam2`` maps camera-2
coordinates into camera-1 coordinates, ``x1 = s R x2 + t``. Inputs are matched map
points in each keyframe's camera frame, ``xyz1_cam1``, ``xyz2_cam2`` (N, 3) in map
units, and the ideal (undistorted) pixels ``uv1``, ``uv2`` (N, 2) they were matched
to. A pair's error is its reprojection error in both images: ``x2`` mapped by ``S``
into camera 1 against ``uv1``, and ``x1`` mapped by ``S^-1`` into camera 2 against
``uv2``.

* :func:`solve_sim3_ransac`: RANSAC over minimal samples of 3 pairs, each solved by
  :func:`slam.geometry.alignment.umeyama`; the best model re-estimated on its inliers.
* :func:`refine_sim3`: Levenberg-Marquardt on both-way reprojection error with a
  Huber kernel, outliers dropped between two rounds (ORB-SLAM's ``OptimizeSim3``).
  It is numpy, not g2o: g2opy's ``VertexSim3Expmap`` exposes neither the intrinsics
  of its projection edges nor ``_fix_scale``, and stereo/RGB-D needs the fixed scale.
  The update is on the left, ``S <- exp(d) S`` with ``d = [rho, phi, sigma]``
  (:mod:`slam.geometry.lie` order); with a fixed scale ``sigma = 0``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from slam.errors import GeometryError
from slam.geometry.alignment import OK, similarity_matrix, umeyama, umeyama_batch
from slam.geometry.lie import sim3_exp

log = logging.getLogger(__name__)
Array = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

RANSAC_BATCH = 32
"""Hypotheses drawn and scored together; the stopping rule is checked between batches."""
CHI2_2DOF_99 = 9.21
"""99 % chi-square quantile, 2 degrees of freedom: the RANSAC inlier gate (x sigma^2)."""
REFINE_HUBER_DELTA = math.sqrt(10.0)
"""Huber threshold of :func:`refine_sim3`, in whitened units (as ORB-SLAM)."""
MIN_DEPTH = 1e-6
"""A point with ``z <= MIN_DEPTH`` in the camera it is projected into has no projection."""


@dataclass(frozen=True)
class Sim3Estimate:
    """A RANSAC alignment: ``S_cam1_cam2`` (4x4), its ``scale`` and ``inliers`` (N,) bool."""

    S_cam1_cam2: Array
    scale: float
    inliers: BoolArray


@dataclass(frozen=True)
class _Pairs:
    xyz1: Array  # (N, 3) in camera 1
    xyz2: Array  # (N, 3) in camera 2
    uv1: Array  # (N, 2) ideal pixels in image 1
    uv2: Array  # (N, 2) ideal pixels in image 2
    K: Array  # (3, 3)


def _as(a: Array, shape: tuple[int, ...], name: str) -> Array:
    out = np.asarray(a, dtype=np.float64)
    if out.shape != shape:
        raise GeometryError(f"{name}: expected shape {shape}, got {out.shape}")
    return out


def _pairs(xyz1: Array, xyz2: Array, uv1: Array, uv2: Array, K: Array) -> _Pairs:
    n = np.asarray(xyz1).shape[0] if np.ndim(xyz1) == 2 else -1
    return _Pairs(_as(xyz1, (n, 3), "xyz1_cam1"), _as(xyz2, (n, 3), "xyz2_cam2"),
                  _as(uv1, (n, 2), "uv1"), _as(uv2, (n, 2), "uv2"), _as(K, (3, 3), "K"))


def _project(K: Array, xyz: Array) -> tuple[Array, BoolArray]:
    """Ideal pixels (N, 2) and validity (z > MIN_DEPTH) of camera points (N, 3)."""
    z = xyz[:, 2]
    valid = z > MIN_DEPTH
    inv_z = 1.0 / np.where(valid, z, 1.0)
    uv = np.stack([K[0, 0] * xyz[:, 0] * inv_z + K[0, 2],
                   K[1, 1] * xyz[:, 1] * inv_z + K[1, 2]], axis=1)
    return uv, valid


def _inverse_parts(S: Array) -> tuple[Array, Array]:
    """``A = (s R)^-1`` (3x3) and ``b`` (3,) with ``S^-1 x = A x + b``."""
    s = float(np.cbrt(np.linalg.det(S[:3, :3])))
    A = S[:3, :3].T / (s * s)
    return A, -A @ S[:3, 3]


def _fit(xyz2: Array, xyz1: Array, fix_scale: bool) -> tuple[Array, float] | None:
    """``S_cam1_cam2`` and scale from point pairs by Umeyama; None when degenerate."""
    try:
        R, t, s = umeyama(xyz2, xyz1, with_scale=not fix_scale)
    except GeometryError:
        return None
    if not s > 0.0:
        return None
    return similarity_matrix(R, t, s), s


def _fit_batch(xyz2: Array, xyz1: Array, fix_scale: bool) -> tuple[Array, Array]:
    """Umeyama on B minimal samples at once: ``S_cam1_cam2`` (M, 4, 4) and scales (M,)
    of the M non-degenerate ones with a positive scale, in sample order.
    ``xyz2``, ``xyz1``: (B, k, 3) source and destination points."""
    R, t, scale, code = umeyama_batch(xyz2, xyz1, with_scale=not fix_scale)
    ok = (code == OK) & (scale > 0.0)
    S = np.zeros((len(R), 4, 4))
    S[:, :3, :3] = scale[:, None, None] * R
    S[:, :3, 3] = t
    S[:, 3, 3] = 1.0
    return S[ok], scale[ok]


def _inliers_batch(S: Array, pairs: _Pairs, th1: Array, th2: Array) -> BoolArray:
    """(M, N) whether each pair is an inlier of each similarity of ``S`` (M, 4, 4): both
    projections in front of their camera and within ``th1``/``th2`` (squared pixels)."""
    sR, t = S[:, :3, :3], S[:, :3, 3]
    s2 = np.cbrt(np.linalg.det(sR)) ** 2
    A = np.transpose(sR, (0, 2, 1)) / s2[:, None, None]  # (s R)^-1 = R^T / s
    b = -np.einsum("bij,bj->bi", A, t)
    p1 = np.einsum("bij,nj->bni", sR, pairs.xyz2) + t[:, None]
    q2 = np.einsum("bij,nj->bni", A, pairs.xyz1) + b[:, None]
    return _within(pairs.K, p1, pairs.uv1, th1) & _within(pairs.K, q2, pairs.uv2, th2)


def _within(K: Array, xyz: Array, uv: Array, th: Array) -> BoolArray:
    """(M, N): points (M, N, 3) in front of the camera projecting within ``th`` (N,)
    squared pixels of ``uv`` (N, 2)."""
    z = xyz[..., 2]
    valid = z > MIN_DEPTH
    inv_z = 1.0 / np.where(valid, z, 1.0)
    du = K[0, 0] * xyz[..., 0] * inv_z + K[0, 2] - uv[:, 0]
    dv = K[1, 1] * xyz[..., 1] * inv_z + K[1, 2] - uv[:, 1]
    return valid & (du * du + dv * dv < th)


def _needed_iterations(inlier_ratio: float, probability: float, cap: int) -> int:
    """RANSAC iterations to draw an all-inlier sample of 3 with ``probability``."""
    w3 = inlier_ratio**3
    if w3 >= 1.0:
        return 1
    if w3 <= 0.0:
        return cap
    return min(cap, math.ceil(math.log(1.0 - probability) / math.log(1.0 - w3)))


def solve_sim3_ransac(
    xyz1_cam1: Array, xyz2_cam2: Array, uv1: Array, uv2: Array, sigma2_1: Array,
    sigma2_2: Array, K: Array, *, fix_scale: bool, min_inliers: int = 20,
    iterations: int = 300, probability: float = 0.99, rng: np.random.Generator | None = None,
) -> Sim3Estimate | None:
    """RANSAC estimate of ``S_cam1_cam2`` from N matched pairs, or None.

    ``sigma2_1``, ``sigma2_2`` (N,) are the keypoint variances (pixels^2) in each image;
    a pair is an inlier when its squared reprojection error is below
    ``CHI2_2DOF_99 * sigma2`` in both images. With ``fix_scale`` the scale is exactly 1
    (SE(3), stereo/RGB-D). Returns None when fewer than ``min_inliers`` pairs agree.
    """
    pairs = _pairs(xyz1_cam1, xyz2_cam2, uv1, uv2, K)
    n = pairs.xyz1.shape[0]
    th1 = CHI2_2DOF_99 * _as(sigma2_1, (n,), "sigma2_1")
    th2 = CHI2_2DOF_99 * _as(sigma2_2, (n,), "sigma2_2")
    if n < max(3, min_inliers):
        return None
    rng = rng if rng is not None else np.random.default_rng()

    best: tuple[Array, float, BoolArray] | None = None
    best_count, needed, it = 0, iterations, 0
    while it < needed:  # hypotheses in batches, scored at once (numpy, not a Python loop)
        b = min(RANSAC_BATCH, needed - it)
        it += b
        idx = np.stack([rng.choice(n, 3, replace=False) for _ in range(b)])
        S, scale = _fit_batch(pairs.xyz2[idx], pairs.xyz1[idx], fix_scale)
        if len(S) == 0:
            continue
        masks = _inliers_batch(S, pairs, th1, th2)
        counts = masks.sum(axis=1)
        k = int(np.argmax(counts))  # the first best of the batch
        if counts[k] > best_count:
            best, best_count = (S[k], float(scale[k]), masks[k]), int(counts[k])
            needed = _needed_iterations(best_count / n, probability, iterations)
    if best is None or best_count < max(3, min_inliers):
        log.debug("sim3 ransac: %d of %d inliers after %d iterations", best_count, n, it)
        return None
    for _ in range(3):  # re-estimate on the inliers until the inlier set settles
        refit = _fit(pairs.xyz2[best[2]], pairs.xyz1[best[2]], fix_scale)
        if refit is None:
            break
        mask = _inliers_batch(refit[0][None], pairs, th1, th2)[0]
        if int(mask.sum()) < int(best[2].sum()):
            break
        settled = bool(np.array_equal(mask, best[2]))
        best = (refit[0], refit[1], mask)
        if settled:
            break
    log.debug("sim3 ransac: %d of %d inliers after %d iterations", int(best[2].sum()), n, it)
    return Sim3Estimate(best[0], float(best[1]), best[2])


def _hat_batch(p: Array) -> Array:
    """Skew matrices (N, 3, 3) of vectors (N, 3)."""
    H = np.zeros((p.shape[0], 3, 3))
    H[:, 0, 1], H[:, 0, 2] = -p[:, 2], p[:, 1]
    H[:, 1, 0], H[:, 1, 2] = p[:, 2], -p[:, 0]
    H[:, 2, 0], H[:, 2, 1] = -p[:, 1], p[:, 0]
    return H


def _point_jacobian(p: Array) -> Array:
    """``d(exp(d) p)/dd`` at ``d = 0``: ``[I, -[p]_x, p]`` (N, 3, 7)."""
    G = np.zeros((p.shape[0], 3, 7))
    G[:, :, :3] = np.eye(3)
    G[:, :, 3:6] = -_hat_batch(p)
    G[:, :, 6] = p
    return G


def _projection_jacobian(K: Array, p: Array) -> Array:
    """``d pi(p) / dp`` (N, 2, 3) of the pinhole projection; p must have z > 0."""
    inv_z = 1.0 / p[:, 2]
    P = np.zeros((p.shape[0], 2, 3))
    P[:, 0, 0] = K[0, 0] * inv_z
    P[:, 0, 2] = -K[0, 0] * p[:, 0] * inv_z**2
    P[:, 1, 1] = K[1, 1] * inv_z
    P[:, 1, 2] = -K[1, 1] * p[:, 1] * inv_z**2
    return P


def _residuals(S: Array, pairs: _Pairs, jacobians: bool) -> tuple[Array, Array, BoolArray]:
    """Residuals (N, 4) ``[uv1 - pi(S x2), uv2 - pi(S^-1 x1)]``, their Jacobians
    (N, 4, 7) with respect to a left increment ``S <- exp(d) S`` (empty unless asked),
    and validity (N,) (both projections in front of their camera)."""
    p1 = pairs.xyz2 @ S[:3, :3].T + S[:3, 3]
    A, b = _inverse_parts(S)
    q2 = pairs.xyz1 @ A.T + b
    uv1_hat, ok1 = _project(pairs.K, p1)
    uv2_hat, ok2 = _project(pairs.K, q2)
    e = np.concatenate([pairs.uv1 - uv1_hat, pairs.uv2 - uv2_hat], axis=1)
    valid = np.asarray(ok1 & ok2)
    if not jacobians:
        return e, np.empty((0, 4, 7)), valid
    n = e.shape[0]
    J = np.zeros((n, 4, 7))
    safe1 = np.where(valid[:, None], p1, 1.0)
    safe2 = np.where(valid[:, None], q2, 1.0)
    J[:, :2] = -_projection_jacobian(pairs.K, safe1) @ _point_jacobian(p1)
    # S^-1 exp(-d) x1: the increment enters with a minus sign, then through A.
    J[:, 2:] = _projection_jacobian(pairs.K, safe2) @ (A @ _point_jacobian(pairs.xyz1))
    return e, J, valid


def sim3_residuals(
    S_cam1_cam2: Array, xyz1_cam1: Array, xyz2_cam2: Array, uv1: Array, uv2: Array, K: Array
) -> tuple[Array, Array, BoolArray]:
    """Both-way reprojection residuals (N, 4) in pixels, ``[uv1 - pi(K S x2),
    uv2 - pi(K S^-1 x1)]``; their Jacobians (N, 4, 7) for the left increment
    ``S <- exp(d) S``, ``d = [rho, phi, sigma]``; and validity (N,) (in front of both
    cameras; Jacobians of invalid pairs are meaningless)."""
    pairs = _pairs(xyz1_cam1, xyz2_cam2, uv1, uv2, K)
    return _residuals(_as(S_cam1_cam2, (4, 4), "S_cam1_cam2"), pairs, True)


def _huber(chi2: Array) -> tuple[Array, Array]:
    """Huber cost and IRLS weight of chi2 values (g2o's form, delta in whitened units)."""
    d = REFINE_HUBER_DELTA
    big = chi2 > d * d
    root = np.sqrt(np.where(big, chi2, 1.0))
    return np.where(big, 2.0 * d * root - d * d, chi2), np.where(big, d / root, 1.0)


def _chi2(e: Array, w: Array) -> Array:
    """Per-pair chi2 (N, 2) in image 1 and image 2 from residuals (N, 4), weights (N, 2)."""
    return np.stack([(e[:, :2] ** 2).sum(1), (e[:, 2:] ** 2).sum(1)], axis=1) * w


def _cost(S: Array, pairs: _Pairs, w: Array, use: BoolArray) -> float:
    """Robust cost of the ``use`` pairs; inf if one of them lost its projection."""
    e, _, valid = _residuals(S, pairs, False)
    if not valid[use].all():
        return math.inf
    return float(_huber(_chi2(e[use], w[use]))[0].sum())


def _lm(S: Array, pairs: _Pairs, w: Array, active: BoolArray, dof: int,
        iterations: int) -> Array:
    """Levenberg-Marquardt (Nielsen's lambda schedule) on the active pairs."""
    lam, nu = -1.0, 2.0
    for _ in range(iterations):
        e, J, valid = _residuals(S, pairs, True)
        use = active & valid
        if not use.any():
            break
        rho, irls = _huber(_chi2(e[use], w[use]))
        cost = float(rho.sum())
        row_w = np.repeat(irls * w[use], 2, axis=1)  # (M, 4)
        Ju = J[use][:, :, :dof]
        H = np.einsum("mri,mr,mrj->ij", Ju, row_w, Ju)
        g = np.einsum("mri,mr,mr->i", Ju, row_w, e[use])
        if lam < 0.0:
            lam = 1e-5 * float(np.max(np.diag(H)))
        accepted = False
        for _trial in range(10):
            try:
                dx = np.linalg.solve(H + lam * np.eye(dof), -g)
            except np.linalg.LinAlgError:
                lam, nu = lam * nu, nu * 2.0
                continue
            S_new = sim3_exp(np.pad(dx, (0, 7 - dof))) @ S
            new_cost = _cost(S_new, pairs, w, use)
            gain = float(dx @ (lam * dx - g)) + 1e-12
            ratio = (cost - new_cost) / gain
            if math.isfinite(new_cost) and ratio > 0.0:
                lam *= max(1.0 / 3.0, 1.0 - (2.0 * ratio - 1.0) ** 3)
                nu, S, accepted = 2.0, S_new, True
                break
            lam, nu = lam * nu, nu * 2.0
        if not accepted or cost - new_cost <= 1e-12 * cost or float(dx @ dx) < 1e-20:
            break
    return S


def refine_sim3(
    S_cam1_cam2: Array, xyz1_cam1: Array, xyz2_cam2: Array, uv1: Array, uv2: Array,
    inv_sigma2_1: Array, inv_sigma2_2: Array, K: Array, *, fix_scale: bool,
    chi2_threshold: float = 10.0, iterations: tuple[int, ...] = (5, 5),
) -> tuple[Array, BoolArray]:
    """Refined ``S_cam1_cam2`` (4x4) and the inlier pairs (N,) bool.

    Minimises the Huber-ed (delta ``sqrt(10)``) both-way reprojection chi2
    (``inv_sigma2`` (N,) per image, 1/pixels^2) over the 7 similarity parameters, or 6
    with ``fix_scale`` (the start's scale is kept). ``iterations`` gives the LM
    iterations of each round; before every round after the first, pairs with chi2 above
    ``chi2_threshold`` in either image are dropped for good. Inliers are the pairs
    still in and within the threshold (and in front of both cameras) at the end.
    """
    pairs = _pairs(xyz1_cam1, xyz2_cam2, uv1, uv2, K)
    n = pairs.xyz1.shape[0]
    S = _as(S_cam1_cam2, (4, 4), "S_cam1_cam2").copy()
    w = np.stack([_as(inv_sigma2_1, (n,), "inv_sigma2_1"),
                  _as(inv_sigma2_2, (n,), "inv_sigma2_2")], axis=1)
    dof = 6 if fix_scale else 7
    active = np.ones(n, dtype=bool)

    def within() -> BoolArray:
        e, _, valid = _residuals(S, pairs, False)
        return np.asarray(valid & (_chi2(e, w) <= chi2_threshold).all(axis=1))

    for k, its in enumerate(iterations):
        if k > 0:
            active &= within()
        S = _lm(S, pairs, w, active, dof, int(its))
    inliers = active & within()
    log.debug("refine_sim3: %d of %d inliers", int(inliers.sum()), n)
    return S, inliers

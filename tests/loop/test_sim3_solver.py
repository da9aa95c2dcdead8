"""Sim(3) RANSAC and refinement against exact synthetic ground truth, OpenCV and g2o."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from slam.errors import GeometryError
from slam.geometry.alignment import similarity_matrix
from slam.geometry.lie import sim3_exp, sim3_inv, so3_exp, so3_log
from slam.loop.sim3_solver import Sim3Estimate, refine_sim3, sim3_residuals, solve_sim3_ransac

Array = NDArray[np.float64]
K = np.array([[520.0, 0.0, 320.0], [0.0, 510.0, 240.0], [0.0, 0.0, 1.0]])


@dataclass
class Pairs:
    xyz1: Array
    xyz2: Array
    uv1: Array
    uv2: Array
    sigma2_1: Array
    sigma2_2: Array
    outlier: NDArray[np.bool_]


def _project(xyz: Array) -> Array:
    uvw = xyz @ K.T
    return uvw[:, :2] / uvw[:, 2:]


def _true_sim3(scale: float) -> Array:
    axis = np.array([0.2, 1.0, 0.1]) / np.linalg.norm([0.2, 1.0, 0.1])
    return similarity_matrix(so3_exp(axis * np.radians(30.0)), np.array([0.4, -0.1, 0.3]), scale)


def _pairs(rng: np.random.Generator, S_1_2: Array, n: int = 200, outlier_frac: float = 0.4,
           noise_px: float = 0.5, noise_rel3d: float = 0.002) -> Pairs:
    """Matches of points seen in camera 2 (depth 2..8) and mapped into camera 1 by S."""
    uv = rng.uniform([0, 0], [640, 480], size=(n, 2))
    z = rng.uniform(2.0, 8.0, size=n)
    xyz2 = np.c_[(uv - K[:2, 2]) / np.diag(K)[:2] * z[:, None], z]
    xyz1 = xyz2 @ S_1_2[:3, :3].T + S_1_2[:3, 3]
    uv1, uv2 = _project(xyz1), _project(xyz2)
    xyz1 = xyz1 * (1.0 + noise_rel3d * rng.normal(size=(n, 1)))
    xyz2 = xyz2 * (1.0 + noise_rel3d * rng.normal(size=(n, 1)))
    uv1 += noise_px * rng.normal(size=(n, 2))
    uv2 += noise_px * rng.normal(size=(n, 2))
    out = np.zeros(n, bool)
    out[rng.choice(n, int(outlier_frac * n), replace=False)] = True
    idx = np.flatnonzero(out)
    perm = np.roll(idx, 1)  # wrong matches: camera-1 side of another pair
    xyz1[idx], uv1[idx] = xyz1[perm], uv1[perm]
    sigma2 = 1.2 ** (2 * rng.integers(0, 3, size=(2, n)))
    return Pairs(xyz1, xyz2, uv1, uv2, sigma2[0].astype(float), sigma2[1].astype(float), out)


def _rot_err_deg(A: Array, B: Array) -> float:
    Ra = A[:3, :3] / np.cbrt(np.linalg.det(A[:3, :3]))
    Rb = B[:3, :3] / np.cbrt(np.linalg.det(B[:3, :3]))
    return float(np.degrees(np.linalg.norm(so3_log(Ra.T @ Rb))))


def _ransac(p: Pairs, fix_scale: bool, seed: int = 0, min_inliers: int = 20
            ) -> Sim3Estimate | None:
    return solve_sim3_ransac(p.xyz1, p.xyz2, p.uv1, p.uv2, p.sigma2_1, p.sigma2_2, K,
                             fix_scale=fix_scale, min_inliers=min_inliers,
                             rng=np.random.default_rng(seed))


def test_ransac_recovers_similarity_with_40_percent_outliers() -> None:
    S_true = _true_sim3(0.7)
    p = _pairs(np.random.default_rng(1), S_true)
    est = _ransac(p, fix_scale=False)
    assert est is not None
    assert _rot_err_deg(est.S_cam1_cam2, S_true) < 0.5
    assert abs(est.scale / 0.7 - 1.0) < 0.01
    assert est.scale == pytest.approx(np.cbrt(np.linalg.det(est.S_cam1_cam2[:3, :3])), rel=1e-12)
    assert np.linalg.norm(est.S_cam1_cam2[:3, 3] - S_true[:3, 3]) < 0.02
    assert not np.any(est.inliers & p.outlier)
    assert est.inliers[~p.outlier].mean() > 0.95


def test_ransac_checks_both_images() -> None:
    """A camera-1 point at the wrong depth on the right ray reprojects well into image 1
    but not into image 2: it must be an outlier."""
    S_true = _true_sim3(0.7)
    p = _pairs(np.random.default_rng(9), S_true, outlier_frac=0.2)
    moved = 1.5 * p.xyz1
    S_2_1 = sim3_inv(S_true)
    shift = np.linalg.norm(_project(moved @ S_2_1[:3, :3].T + S_2_1[:3, 3]) - p.uv2, axis=1)
    wrong_depth = np.flatnonzero(~p.outlier & (shift > 10.0))[:20]  # visible parallax
    assert len(wrong_depth) == 20
    p.xyz1[wrong_depth] = moved[wrong_depth]
    est = _ransac(p, fix_scale=False)
    assert est is not None
    assert not np.any(est.inliers[wrong_depth])
    assert est.inliers.sum() > 0.95 * (len(p.xyz1) - p.outlier.sum() - 20)


def test_ransac_with_fixed_scale_returns_scale_one_exactly() -> None:
    S_true = _true_sim3(1.0)
    p = _pairs(np.random.default_rng(2), S_true)
    est = _ransac(p, fix_scale=True)
    assert est is not None
    assert est.scale == 1.0
    R = est.S_cam1_cam2[:3, :3]
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
    assert _rot_err_deg(est.S_cam1_cam2, S_true) < 0.5
    assert est.inliers[~p.outlier].mean() > 0.95 and not np.any(est.inliers & p.outlier)


def test_ransac_final_model_is_the_umeyama_fit_of_opencv_on_its_inliers() -> None:
    S_true = _true_sim3(0.7)
    p = _pairs(np.random.default_rng(3), S_true)
    est = _ransac(p, fix_scale=False)
    assert est is not None
    m = est.inliers
    Rt_cv, scale = cv2.estimateAffine3D(p.xyz2[m], p.xyz1[m], force_rotation=True)
    Rt: Array = np.asarray(Rt_cv, dtype=np.float64)
    S_cv = similarity_matrix(Rt[:, :3], Rt[:, 3], scale)
    np.testing.assert_allclose(est.S_cam1_cam2, S_cv, atol=1e-9)
    assert est.scale == pytest.approx(scale, rel=1e-9)


def test_ransac_gives_none_without_a_consistent_model() -> None:
    rng = np.random.default_rng(4)
    p = _pairs(rng, _true_sim3(0.7), n=100, outlier_frac=1.0)
    assert _ransac(p, fix_scale=False) is None
    few = _pairs(rng, _true_sim3(0.7), n=15, outlier_frac=0.0)
    assert _ransac(few, fix_scale=False, min_inliers=20) is None


def test_ransac_rejects_malformed_input() -> None:
    p = _pairs(np.random.default_rng(5), _true_sim3(0.7), n=30)
    with pytest.raises(GeometryError):
        solve_sim3_ransac(p.xyz1, p.xyz2[:-1], p.uv1, p.uv2, p.sigma2_1, p.sigma2_2, K,
                          fix_scale=False)
    with pytest.raises(GeometryError):
        solve_sim3_ransac(p.xyz1, p.xyz2, p.uv1, p.uv2, p.sigma2_1[:3], p.sigma2_2, K,
                          fix_scale=False)


def test_residual_jacobians_match_finite_differences() -> None:
    rng = np.random.default_rng(6)
    S = sim3_exp(np.array([0.3, -0.2, 0.1, 0.2, 0.4, -0.1, -0.3]))
    p = _pairs(rng, S, n=20, outlier_frac=0.0)
    _, J, valid = sim3_residuals(S, p.xyz1, p.xyz2, p.uv1, p.uv2, K)
    assert valid.all()
    h = 1e-6
    for k in range(7):
        d = np.zeros(7)
        d[k] = h
        ep = sim3_residuals(sim3_exp(d) @ S, p.xyz1, p.xyz2, p.uv1, p.uv2, K)[0]
        em = sim3_residuals(sim3_exp(-d) @ S, p.xyz1, p.xyz2, p.uv1, p.uv2, K)[0]
        np.testing.assert_allclose(J[:, :, k], (ep - em) / (2 * h), rtol=1e-5, atol=1e-4)


def _chi2(S: Array, p: Pairs, mask: NDArray[np.bool_]) -> float:
    e, _, _ = sim3_residuals(S, p.xyz1, p.xyz2, p.uv1, p.uv2, K)
    w = np.c_[1 / p.sigma2_1, 1 / p.sigma2_1, 1 / p.sigma2_2, 1 / p.sigma2_2]
    return float((w * e**2)[mask].sum())


def _with_gross_outliers(p: Pairs, rng: np.random.Generator, frac: float) -> Pairs:
    out = np.zeros(len(p.xyz1), bool)
    out[rng.choice(len(out), int(frac * len(out)), replace=False)] = True
    uv1 = p.uv1.copy()
    uv1[out] += rng.choice([-1.0, 1.0], size=(out.sum(), 2)) * rng.uniform(20, 40, (out.sum(), 2))
    return Pairs(p.xyz1, p.xyz2, uv1, p.uv2, p.sigma2_1, p.sigma2_2, out)


@pytest.mark.parametrize("fix_scale", [False, True])
def test_refine_reduces_error_and_removes_planted_outliers(fix_scale: bool) -> None:
    rng = np.random.default_rng(7)
    S_true = _true_sim3(1.0 if fix_scale else 0.7)
    p = _with_gross_outliers(_pairs(rng, S_true, n=150, outlier_frac=0.0), rng, 0.15)
    delta = np.array([0.05, -0.03, 0.04, 0.02, -0.03, 0.025, 0.0 if fix_scale else 0.05])
    S0 = sim3_exp(delta) @ S_true
    S, inl = refine_sim3(S0, p.xyz1, p.xyz2, p.uv1, p.uv2, 1 / p.sigma2_1, 1 / p.sigma2_2, K,
                         fix_scale=fix_scale)
    good = ~p.outlier
    assert _chi2(S, p, good) < 0.05 * _chi2(S0, p, good)
    assert _chi2(S, p, good) <= _chi2(S_true, p, good)  # at the optimum, not just near truth
    np.testing.assert_array_equal(inl, good)
    assert _rot_err_deg(S, S_true) < 0.05
    s, s_true = np.cbrt(np.linalg.det(S[:3, :3])), np.cbrt(np.linalg.det(S_true[:3, :3]))
    if fix_scale:
        assert s == pytest.approx(1.0, abs=1e-12)
    else:
        assert s == pytest.approx(s_true, rel=5e-3)  # depth is weak in reprojection error


def test_refine_reaches_the_same_optimum_as_g2o() -> None:
    """g2o's Sim3 projection edges on normalised coordinates (focal 1, no principal point,
    information scaled by f^2) minimise the same chi2; both optimisers must agree."""
    g2o = pytest.importorskip("g2opy")
    rng = np.random.default_rng(8)
    S_true = _true_sim3(0.7)
    p = _pairs(rng, S_true, n=80, outlier_frac=0.0)
    S0 = sim3_exp(np.array([0.03, 0.02, -0.02, 0.01, 0.02, -0.01, 0.03])) @ S_true
    ours, _ = refine_sim3(S0, p.xyz1, p.xyz2, p.uv1, p.uv2, 1 / p.sigma2_1, 1 / p.sigma2_2, K,
                          fix_scale=False, iterations=(20,))
    opt = g2o.SparseOptimizer()
    opt.set_algorithm(g2o.OptimizationAlgorithmLevenberg(
        g2o.BlockSolverSim3(g2o.LinearSolverEigenSim3())))
    s0 = np.cbrt(np.linalg.det(S0[:3, :3]))
    v = g2o.VertexSim3Expmap()
    v.set_id(0)
    v.set_estimate(g2o.Sim3(np.asfortranarray(S0[:3, :3] / s0), S0[:3, 3].copy(), float(s0)))
    opt.add_vertex(v)
    f2 = np.diag([K[0, 0] ** 2, K[1, 1] ** 2])
    n1 = (p.uv1 - K[:2, 2]) / np.diag(K)[:2]
    n2 = (p.uv2 - K[:2, 2]) / np.diag(K)[:2]
    for i in range(len(p.xyz1)):
        for side, (xyz, nuv, s2, edge_t) in enumerate(
            [(p.xyz2[i], n1[i], p.sigma2_1[i], g2o.EdgeSim3ProjectXYZ),
             (p.xyz1[i], n2[i], p.sigma2_2[i], g2o.EdgeInverseSim3ProjectXYZ)]):
            vp = g2o.VertexPointXYZ()
            vp.set_id(1 + 2 * i + side)
            vp.set_estimate(xyz.copy())
            vp.set_fixed(True)
            opt.add_vertex(vp)
            e = edge_t()
            e.set_vertex(0, vp)
            e.set_vertex(1, v)
            e.set_measurement(nuv.copy())
            e.set_information(f2 / s2)
            opt.add_edge(e)
    opt.initialize_optimization()
    opt.optimize(20)
    est = v.estimate()
    S_g2o = similarity_matrix(est.rotation().matrix(), est.translation(), est.scale())
    np.testing.assert_allclose(ours, S_g2o, atol=1e-7)
    assert _chi2(ours, p, np.ones(len(p.xyz1), bool)) < _chi2(S0, p, np.ones(len(p.xyz1), bool))


@pytest.mark.parametrize("fix_scale", [False, True])
def test_batched_minimal_fits_equal_umeyama_and_drop_degenerate_samples(fix_scale: bool) -> None:
    from slam.geometry.alignment import umeyama
    from slam.loop.sim3_solver import _fit_batch

    rng = np.random.default_rng(11)
    src = rng.normal(size=(40, 3, 3))
    dst = rng.normal(size=(40, 3, 3))
    src[3] = src[3, :1]  # coincident source points
    src[7, 2] = 0.5 * (src[7, 0] + src[7, 1])  # collinear
    dst[9, 1, 2] = np.nan
    S, scale = _fit_batch(src, dst, fix_scale)
    want = []
    for x, y in zip(src, dst):
        try:
            R, t, s = umeyama(x, y, with_scale=not fix_scale)
        except GeometryError:
            continue
        if s > 0:
            want.append((similarity_matrix(R, t, s), s))
    assert len(S) == len(want) == 37
    np.testing.assert_allclose(S, np.array([w[0] for w in want]), atol=1e-9)
    np.testing.assert_allclose(scale, [w[1] for w in want], rtol=1e-9)

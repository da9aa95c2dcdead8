"""Local BA (Numba, Schur complement) against ground truth, a dense solve and scipy."""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest
from scipy.optimize import least_squares

from benchmarks.bench_ba import make_problem
from slam.errors import GeometryError
from slam.geometry import lie
from slam.optim import _ba_core, kernels
from slam.optim.local_ba import (
    BAProblem,
    BAResult,
    _packed,
    observation_chi2,
    problem_with_estimate,
    solve_local_ba,
)


def _robust_cost(problem: BAProblem, T: np.ndarray, X: np.ndarray, huber: bool = True) -> float:
    chi2, valid = observation_chi2(problem, T, X)
    delta = np.where(problem.obs_u_right >= 0, kernels.DELTA_STEREO, kernels.DELTA_MONO)
    chi2 = chi2[valid]
    delta = delta[valid]
    if not huber:
        return float(chi2.sum())
    return float(np.where(chi2 <= delta**2, chi2, 2 * delta * np.sqrt(chi2) - delta**2).sum())


def _multi_view(prob: BAProblem) -> np.ndarray:
    """(P,) bool: points with at least two observations (fully constrained)."""
    return np.bincount(prob.obs_pt, minlength=prob.xyz_world.shape[0]) >= 2


def _only_points(prob: BAProblem, keep: np.ndarray) -> BAProblem:
    """The problem restricted to the points in ``keep`` (P,) bool, re-indexed."""
    new_idx = np.cumsum(keep) - 1
    o = keep[prob.obs_pt]
    return dataclasses.replace(
        prob, xyz_world=prob.xyz_world[keep], obs_cam=prob.obs_cam[o],
        obs_pt=new_idx[prob.obs_pt[o]].astype(np.int32), obs_uv=prob.obs_uv[o],
        obs_u_right=prob.obs_u_right[o], obs_inv_sigma2=prob.obs_inv_sigma2[o])


def _pose_errors(T: np.ndarray, T_gt: np.ndarray) -> np.ndarray:
    return np.array([np.linalg.norm(lie.se3_log(a @ lie.se3_inv(b))) for a, b in zip(T, T_gt)])


def test_converges_below_ground_truth_cost_and_flags_outliers() -> None:
    syn = make_problem(6, 400, seed=1, stereo_frac=0.4, outlier_frac=0.03, pose_noise=0.05,
                       point_noise=0.2, pixel_noise=0.5)
    prob = syn.problem
    res = solve_local_ba(prob, iterations=15)
    assert not res.aborted and res.iterations == 15
    gt_cost = _robust_cost(prob, syn.T_cam_world_gt, syn.xyz_world_gt)
    assert res.initial_cost == pytest.approx(_robust_cost(prob, prob.T_cam_world, prob.xyz_world))
    assert res.final_cost == pytest.approx(_robust_cost(prob, res.T_cam_world, res.xyz_world))
    # the ML estimate fits the data better than the truth does
    assert res.final_cost <= gt_cost < res.initial_cost
    # (a point seen by 2 cameras can absorb an outlier, so not all of them are caught)
    assert res.inlier_obs[syn.outlier_obs].mean() < 0.1
    assert res.inlier_obs[~syn.outlier_obs].mean() > 0.9
    np.testing.assert_array_equal(res.T_cam_world[:2], prob.T_cam_world[:2])  # fixed
    # ORB-SLAM's second pass without the outliers lands near the truth
    second = solve_local_ba(problem_with_estimate(prob, res), iterations=10, huber=False,
                            exclude_obs=~res.inlier_obs)
    err0 = _pose_errors(prob.T_cam_world, syn.T_cam_world_gt)
    err = _pose_errors(second.T_cam_world, syn.T_cam_world_gt)
    assert np.all(err[2:] < 0.3 * err0[2:]) and err.max() < 0.012


def test_exact_data_recovers_ground_truth() -> None:
    syn = make_problem(5, 200, seed=2, stereo_frac=0.3, outlier_frac=0.0, pixel_noise=0.0)
    res = solve_local_ba(syn.problem, iterations=30, huber=False)
    assert res.final_cost < 1e-12
    np.testing.assert_allclose(res.T_cam_world, syn.T_cam_world_gt, atol=1e-7)
    mv = _multi_view(syn.problem)  # a single view leaves the depth free
    np.testing.assert_allclose(res.xyz_world[mv], syn.xyz_world_gt[mv], atol=1e-6)
    assert res.inlier_obs.all()


def _dense_step(prob: BAProblem, lam: float, huber: bool) -> tuple[np.ndarray, np.ndarray]:
    """Reference LM step from the full (cameras + points) normal equations."""
    free_c = np.flatnonzero(~prob.fixed_cams)
    P = prob.xyz_world.shape[0]
    n = 6 * free_c.size + 3 * P
    H, b = np.zeros((n, n)), np.zeros(n)
    for o in range(prob.n_obs):
        m, p = prob.obs_cam[o], prob.obs_pt[o]
        st = prob.obs_u_right[o] >= 0
        T, X = prob.T_cam_world[m], prob.xyz_world[p]
        xyz_cam = T[:3, :3] @ X + T[:3, 3]
        h = kernels.project(prob.K[0, 0], prob.K[1, 1], prob.K[0, 2], prob.K[1, 2], prob.bf,
                            xyz_cam, st)
        z = np.r_[prob.obs_uv[o], prob.obs_u_right[o]][: h.size]
        e = z - h
        chi2 = prob.obs_inv_sigma2[o] * e @ e
        w = prob.obs_inv_sigma2[o]
        if huber:
            w *= kernels.huber_weight(chi2, kernels.DELTA_STEREO if st else kernels.DELTA_MONO)
        J = np.zeros((h.size, n))
        if not prob.fixed_cams[m]:
            c = int(np.searchsorted(free_c, m))
            J[:, 6 * c:6 * c + 6] = kernels.jacobian_pose(T, X, prob.K, prob.bf, st)
        off = 6 * free_c.size + 3 * p
        J[:, off:off + 3] = kernels.jacobian_point(T, X, prob.K, prob.bf, st)
        H += w * J.T @ J
        b -= w * J.T @ e
    dx = np.linalg.solve(H + lam * np.eye(n), b)
    return dx[: 6 * free_c.size], dx[6 * free_c.size:].reshape(P, 3)


@pytest.mark.parametrize("huber", [False, True])
def test_schur_step_equals_dense_solve(huber: bool) -> None:
    prob = make_problem(4, 40, seed=3, stereo_frac=0.5, n_fixed=1, outlier_frac=0.05).problem
    T, X, oc, op, uv, ur, w, cam = _packed(prob)
    order = np.argsort(op, kind="stable").astype(np.int64)
    P, O = X.shape[0], oc.shape[0]
    pt_start = np.zeros(P + 1, np.int64)
    np.cumsum(np.bincount(op, minlength=P), out=pt_start[1:])
    free_cam = np.array([-1, 0, 1, 2], np.int64)
    free_pt = np.arange(P, dtype=np.int64)
    U, bc = np.zeros((3, 6, 6)), np.zeros((3, 6))
    V, bp, Vinv = np.zeros((P, 3, 3)), np.zeros((P, 3)), np.zeros((P, 3, 3))
    Wt, Y, ok = np.zeros((O, 3, 6)), np.zeros((O, 6, 3)), np.zeros(O, bool)
    S, dxc, dxp = np.zeros((18, 18)), np.zeros(18), np.zeros((P, 3))
    lam = 0.7
    _ba_core._linearize(T, X, oc, op, uv, ur, w, cam, order, free_cam, free_pt, huber,
                        U, bc, V, bp, Wt, ok)
    _ba_core._reduced_system(oc, op, order, pt_start, free_cam, free_pt, lam, U, bc, V, bp, Wt,
                             ok, Vinv, Y, S, dxc)
    assert kernels.cholesky_solve_into(S, dxc, 18)
    _ba_core._back_substitute(oc, order, pt_start, free_cam, free_pt, bp, Wt, ok, Vinv, dxc, dxp)
    ref_c, ref_p = _dense_step(prob, lam, huber)
    np.testing.assert_allclose(dxc, ref_c, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(dxp, ref_p, rtol=1e-7, atol=1e-10)


def test_plain_least_squares_matches_scipy() -> None:
    prob = make_problem(3, 40, seed=4, stereo_frac=0.5, n_fixed=1, outlier_frac=0.0).problem
    prob = _only_points(prob, _multi_view(prob))
    res = solve_local_ba(prob, iterations=50, huber=False)
    T0, X0 = prob.T_cam_world, prob.xyz_world

    def unpack(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        T = T0.copy()
        for k in range(2):
            T[k + 1] = lie.se3_exp(x[6 * k:6 * k + 6]) @ T0[k + 1]
        return T, x[12:].reshape(-1, 3)

    st = prob.obs_u_right >= 0
    fx, fy, cx, cy = prob.K[0, 0], prob.K[1, 1], prob.K[0, 2], prob.K[1, 2]
    sw = np.sqrt(prob.obs_inv_sigma2)

    def residuals(x: np.ndarray) -> np.ndarray:
        T, X = unpack(x)
        R, t = T[prob.obs_cam, :3, :3], T[prob.obs_cam, :3, 3]
        xyz_cam = np.einsum("oij,oj->oi", R, X[prob.obs_pt]) + t
        u = fx * xyz_cam[:, 0] / xyz_cam[:, 2] + cx
        v = fy * xyz_cam[:, 1] / xyz_cam[:, 2] + cy
        ur = u - prob.bf / xyz_cam[:, 2]
        e = np.c_[prob.obs_uv[:, 0] - u, prob.obs_uv[:, 1] - v, prob.obs_u_right - ur]
        e[~st, 2] = 0.0
        return (e * sw[:, None]).ravel()

    x0 = np.r_[np.zeros(12), X0.ravel()]
    sol = least_squares(residuals, x0, method="lm", xtol=1e-14, ftol=1e-14, gtol=1e-14)
    ref_cost = 2 * sol.cost
    assert res.final_cost == pytest.approx(ref_cost, rel=1e-7)
    T_ref, X_ref = unpack(sol.x)
    np.testing.assert_allclose(res.T_cam_world, T_ref, atol=1e-6)
    np.testing.assert_allclose(res.xyz_world, X_ref, atol=1e-5)


def test_fixed_points_and_cameras_stay_put() -> None:
    prob = make_problem(4, 100, seed=5).problem
    fixed_pts = np.zeros(100, bool)
    fixed_pts[::3] = True
    res = solve_local_ba(dataclasses.replace(prob, fixed_pts=fixed_pts), iterations=5)
    np.testing.assert_array_equal(res.xyz_world[fixed_pts], prob.xyz_world[fixed_pts])
    moved = np.abs(res.xyz_world - prob.xyz_world).sum(1) > 0
    observed = np.bincount(prob.obs_pt, minlength=100) > 0
    np.testing.assert_array_equal(moved, ~fixed_pts & observed)
    np.testing.assert_array_equal(res.T_cam_world[:2], prob.T_cam_world[:2])
    assert res.final_cost < res.initial_cost


def test_exclude_obs_equals_removing_them_and_second_pass() -> None:
    syn = make_problem(5, 150, seed=6, stereo_frac=0.3, outlier_frac=0.05)
    prob = syn.problem
    first = solve_local_ba(prob, iterations=5)
    excl = ~first.inlier_obs
    second = solve_local_ba(problem_with_estimate(prob, first), iterations=10, huber=False,
                            exclude_obs=excl)
    keep = ~excl
    sub = dataclasses.replace(
        problem_with_estimate(prob, first), obs_cam=prob.obs_cam[keep], obs_pt=prob.obs_pt[keep],
        obs_uv=prob.obs_uv[keep], obs_u_right=prob.obs_u_right[keep],
        obs_inv_sigma2=prob.obs_inv_sigma2[keep])
    ref = solve_local_ba(sub, iterations=10, huber=False)
    np.testing.assert_allclose(second.T_cam_world, ref.T_cam_world, atol=1e-12)
    np.testing.assert_allclose(second.xyz_world, ref.xyz_world, atol=1e-10)
    assert second.final_cost == pytest.approx(ref.final_cost, rel=1e-12)
    assert second.inlier_obs.shape == (prob.n_obs,)  # excluded ones are re-classified too
    np.testing.assert_array_equal(second.inlier_obs[keep], ref.inlier_obs)
    assert second.inlier_obs[syn.outlier_obs].mean() < 0.1


def test_preset_abort_flag_returns_initial_estimate() -> None:
    prob = make_problem(4, 100, seed=7).problem
    flag = np.ones(1, np.int32)
    res = solve_local_ba(prob, iterations=10, abort_flag=flag)
    assert res.aborted and res.iterations == 0
    np.testing.assert_array_equal(res.T_cam_world, prob.T_cam_world)
    assert res.final_cost == res.initial_cost


def test_abort_from_another_thread() -> None:
    prob = make_problem(20, 3000, seed=8).problem
    solve_local_ba(make_problem(3, 20).problem, iterations=1)  # JIT outside the timing
    flag = np.zeros(1, np.int32)
    out: dict[str, BAResult] = {}
    th = threading.Thread(target=lambda: out.setdefault(
        "r", solve_local_ba(prob, iterations=100_000, abort_flag=flag)))
    th.start()
    # Lets the solver get into its iterations; not a synchronisation: the assertions
    # below hold wherever the flag lands (before the first iteration too).
    time.sleep(0.05)
    flag[0] = 1
    th.join(timeout=60)
    assert not th.is_alive()
    res = out["r"]
    assert res.aborted and res.iterations < 100_000
    assert res.final_cost <= res.initial_cost


def test_validation_errors() -> None:
    prob = make_problem(3, 20).problem
    with pytest.raises(GeometryError):
        solve_local_ba(dataclasses.replace(prob, obs_cam=prob.obs_cam + 5))
    with pytest.raises(GeometryError):
        solve_local_ba(dataclasses.replace(prob, obs_uv=prob.obs_uv[:-1]))
    with pytest.raises(GeometryError):
        solve_local_ba(prob, exclude_obs=np.zeros(3, bool))


def test_no_observations() -> None:
    prob = make_problem(3, 20).problem
    empty = dataclasses.replace(
        prob, obs_cam=np.zeros(0, np.int32), obs_pt=np.zeros(0, np.int32),
        obs_uv=np.zeros((0, 2)), obs_u_right=np.zeros(0), obs_inv_sigma2=np.zeros(0))
    res = solve_local_ba(empty)
    np.testing.assert_array_equal(res.T_cam_world, prob.T_cam_world)
    assert res.final_cost == 0.0 and res.inlier_obs.shape == (0,)

"""g2o reference BA: same problem, same cost definition, same optimum as the Numba BA."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.bench_ba import make_problem
from slam.geometry import lie
from slam.optim.g2o_ba import build_graph, run_graph, solve_g2o_ba
from slam.optim.local_ba import solve_local_ba

pytest.importorskip("g2opy")


def _pose_errors(T: np.ndarray, T_gt: np.ndarray) -> np.ndarray:
    return np.array([np.linalg.norm(lie.se3_log(a @ lie.se3_inv(b))) for a, b in zip(T, T_gt)])


@pytest.mark.parametrize("stereo_frac", [0.0, 0.5])
def test_numba_and_g2o_reach_same_optimum_and_ground_truth(stereo_frac: float) -> None:
    syn = make_problem(10, 500, seed=11, stereo_frac=stereo_frac, outlier_frac=0.02,
                       pose_noise=0.05, point_noise=0.2, pixel_noise=0.5)
    prob = syn.problem
    ours = solve_local_ba(prob, iterations=10)
    ref = solve_g2o_ba(prob, iterations=10)
    # the cost definitions agree exactly at the common starting point
    assert ours.initial_cost == pytest.approx(ref.initial_cost, rel=1e-12)
    assert ours.final_cost == pytest.approx(ref.final_cost, rel=0.01)
    assert ours.final_cost < 0.2 * ours.initial_cost
    np.testing.assert_allclose(ours.T_cam_world, ref.T_cam_world, atol=1e-6)
    assert np.mean(ours.inlier_obs == ref.inlier_obs) > 0.999
    # both are close to the truth after a second pass without outliers
    for solve in (solve_local_ba, solve_g2o_ba):
        first = solve(prob, iterations=10)
        second = solve(prob, iterations=10, huber=False, exclude_obs=~first.inlier_obs)
        err0 = _pose_errors(prob.T_cam_world, syn.T_cam_world_gt)
        err = _pose_errors(second.T_cam_world, syn.T_cam_world_gt)
        assert np.all(err[2:] < 0.3 * err0[2:]) and err.max() < 0.012


def test_g2o_pose_convention_and_fixed_vertices() -> None:
    syn = make_problem(4, 100, seed=12, outlier_frac=0.0, pixel_noise=0.0)
    prob = syn.problem
    graph = build_graph(prob)
    # the SE3Quat estimate is camera-from-world, as T_cam_world
    np.testing.assert_allclose(graph.cam_vertices[3].estimate().matrix(), prob.T_cam_world[3],
                               atol=1e-12)
    out = run_graph(graph, prob, iterations=20)
    assert out.solve_seconds > 0
    res = out.result
    np.testing.assert_array_equal(res.T_cam_world[:2], prob.T_cam_world[:2])
    np.testing.assert_allclose(res.T_cam_world, syn.T_cam_world_gt, atol=1e-7)
    assert res.final_cost < 1e-10


def test_exclude_obs_matches_numba() -> None:
    prob = make_problem(5, 150, seed=13, stereo_frac=0.3, outlier_frac=0.05).problem
    excl = np.zeros(prob.n_obs, bool)
    excl[::5] = True
    ours = solve_local_ba(prob, iterations=5, exclude_obs=excl)
    ref = solve_g2o_ba(prob, iterations=5, exclude_obs=excl)
    assert ours.initial_cost == pytest.approx(ref.initial_cost, rel=1e-12)
    assert ours.final_cost == pytest.approx(ref.final_cost, rel=1e-6)
    np.testing.assert_allclose(ours.xyz_world, ref.xyz_world, atol=1e-6)

"""Reference bundle adjustment with g2o (g2opy), solving a :class:`BAProblem`.

Graph: one ``VertexSE3Expmap`` per camera (estimate = ``SE3Quat`` of ``T_cam_world``,
camera-from-world, as g2o's projection edges expect), one marginalised ``VertexPointXYZ``
per observed point, ``EdgeSE3ProjectXYZ`` (mono) / ``EdgeStereoSE3ProjectXYZ`` (stereo)
with information ``inv_sigma2 * I`` and an optional ``RobustKernelHuber`` (sqrt(5.991) /
sqrt(7.815)); ``BlockSolverSE3`` + ``LinearSolverEigenSE3`` +
``OptimizationAlgorithmLevenberg``. The reported costs are g2o's own
``active_robust_chi2()``, the same quantity as :mod:`slam.optim.local_ba`'s cost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from slam.errors import GeometryError
from slam.optim.kernels import CHI2_MONO, CHI2_STEREO, DELTA_MONO, DELTA_STEREO
from slam.optim.local_ba import BAProblem, BAResult, observation_chi2

try:
    import g2opy as g2o
except ImportError:  # pragma: no cover - g2opy is a declared dependency
    g2o = None


@dataclass
class G2OGraph:
    """A built g2o optimiser and the handles needed to read the solution back."""

    optimizer: Any
    cam_vertices: list[Any]  # (M,) VertexSE3Expmap
    pt_vertices: list[Any | None]  # (P,) VertexPointXYZ or None for unobserved points
    n_edges: int


@dataclass
class G2OSolve:
    """A g2o solution and the time spent in ``optimizer.optimize`` alone."""

    result: BAResult
    solve_seconds: float


def build_graph(problem: BAProblem, huber: bool = True,
                exclude_obs: NDArray[np.bool_] | None = None) -> G2OGraph:
    """Build the g2o optimiser for ``problem``; excluded observations get no edge."""
    if g2o is None:  # pragma: no cover
        raise GeometryError("g2opy is not installed")
    problem.validate()
    opt = g2o.SparseOptimizer()
    solver = g2o.BlockSolverSE3(g2o.LinearSolverEigenSE3())
    opt.set_algorithm(g2o.OptimizationAlgorithmLevenberg(solver))
    M = problem.T_cam_world.shape[0]
    P = problem.xyz_world.shape[0]
    cams = []
    for m in range(M):
        v = g2o.VertexSE3Expmap()
        T = np.asarray(problem.T_cam_world[m], dtype=np.float64)
        v.set_estimate(g2o.SE3Quat(T[:3, :3], T[:3, 3]))
        v.set_id(m)
        v.set_fixed(bool(problem.fixed_cams[m]))
        opt.add_vertex(v)
        cams.append(v)
    active = np.ones(problem.n_obs, bool)
    if exclude_obs is not None:
        active &= ~np.asarray(exclude_obs, dtype=bool)
    observed = np.zeros(P, bool)
    observed[np.asarray(problem.obs_pt)[active]] = True
    fixed_pts = np.zeros(P, bool) if problem.fixed_pts is None else problem.fixed_pts
    pts: list[Any | None] = [None] * P
    for p in np.flatnonzero(observed):
        v = g2o.VertexPointXYZ()
        v.set_estimate(np.asarray(problem.xyz_world[p], dtype=np.float64))
        v.set_id(M + int(p))
        v.set_fixed(bool(fixed_pts[p]))
        v.set_marginalized(True)
        opt.add_vertex(v)
        pts[p] = v
    K = np.asarray(problem.K, dtype=np.float64)
    n_edges = 0
    for o in np.flatnonzero(active):
        opt.add_edge(_make_edge(problem, int(o), pts[problem.obs_pt[o]],
                                cams[problem.obs_cam[o]], K, huber))
        n_edges += 1
    return G2OGraph(opt, cams, pts, n_edges)


def _make_edge(problem: BAProblem, o: int, v_pt: Any, v_cam: Any, K: NDArray[np.float64],
               huber: bool) -> Any:
    ur = float(problem.obs_u_right[o])
    w = float(problem.obs_inv_sigma2[o])
    uv = problem.obs_uv[o]
    if ur >= 0.0:
        e = g2o.EdgeStereoSE3ProjectXYZ()
        e.set_measurement(np.array([uv[0], uv[1], ur], dtype=np.float64))
        e.set_information(np.eye(3) * w)
        e.bf = float(problem.bf)
        delta = DELTA_STEREO
    else:
        e = g2o.EdgeSE3ProjectXYZ()
        e.set_measurement(np.array([uv[0], uv[1]], dtype=np.float64))
        e.set_information(np.eye(2) * w)
        delta = DELTA_MONO
    e.set_vertex(0, v_pt)
    e.set_vertex(1, v_cam)
    e.fx, e.fy, e.cx, e.cy = float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])
    if huber:
        e.set_robust_kernel(g2o.RobustKernelHuber(delta))
    return e


def run_graph(graph: G2OGraph, problem: BAProblem, iterations: int = 10) -> G2OSolve:
    """Optimise a built graph and read the estimates back into a :class:`BAResult`."""
    opt = graph.optimizer
    opt.initialize_optimization()
    opt.compute_active_errors()
    initial_cost = float(opt.active_robust_chi2())
    t0 = time.perf_counter()
    its = int(opt.optimize(int(iterations))) if graph.n_edges else 0
    solve_s = time.perf_counter() - t0
    opt.compute_active_errors()
    final_cost = float(opt.active_robust_chi2())
    T = np.array(problem.T_cam_world, dtype=np.float64, copy=True)
    for m, v in enumerate(graph.cam_vertices):
        if not v.fixed():  # fixed ones keep the input exactly (no quaternion round trip)
            T[m] = v.estimate().matrix()
    X = np.array(problem.xyz_world, dtype=np.float64, copy=True)
    for p, vp in enumerate(graph.pt_vertices):
        if vp is not None and not vp.fixed():
            X[p] = vp.estimate()
    chi2, valid = observation_chi2(problem, T, X)
    thr = np.where(np.asarray(problem.obs_u_right) >= 0.0, CHI2_STEREO, CHI2_MONO)
    inlier = valid & (chi2 <= thr)
    result = BAResult(T, X, initial_cost, final_cost, its, False, inlier)
    return G2OSolve(result, solve_s)


def solve_g2o_ba(problem: BAProblem, iterations: int = 10, huber: bool = True,
                 exclude_obs: NDArray[np.bool_] | None = None) -> BAResult:
    """Solve ``problem`` with g2o; same semantics as :func:`slam.optim.local_ba.solve_local_ba`."""
    graph = build_graph(problem, huber=huber, exclude_obs=exclude_obs)
    return run_graph(graph, problem, iterations).result

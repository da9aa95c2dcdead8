"""Benchmark: our Numba local BA against g2o on identical synthetic problems.

Run ``python -m benchmarks.bench_ba --out results/ba.json``. For each size it times

* Numba: the first call (JIT compile or cache load) separately, then the solve;
* g2o: "solve" = ``optimizer.optimize`` only, and "whole call" = building the graph from
  Python + solving + reading the estimates back,

with the same iteration count, and reports time ratios and final costs (both are the
robust chi2 of :mod:`slam.optim.local_ba`). Timings are medians over ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from slam.geometry.lie import se3_exp, se3_inv, transform_points
from slam.optim.local_ba import BAProblem, solve_local_ba

log = logging.getLogger(__name__)

K_DEFAULT = np.array([[520.0, 0.0, 320.0], [0.0, 520.0, 240.0], [0.0, 0.0, 1.0]])
WIDTH, HEIGHT = 640, 480
SIZES = ((5, 500), (10, 2000), (20, 5000))


@dataclass
class SyntheticBA:
    """A synthetic problem and its ground truth."""

    problem: BAProblem
    T_cam_world_gt: NDArray[np.float64]  # (M,4,4)
    xyz_world_gt: NDArray[np.float64]  # (P,3)
    outlier_obs: NDArray[np.bool_]  # (O,)


def make_problem(n_kf: int, n_pts: int, seed: int = 0, stereo_frac: float = 0.0,
                 outlier_frac: float = 0.01, n_fixed: int = 2, pose_noise: float = 0.02,
                 point_noise: float = 0.05, pixel_noise: float = 1.0) -> SyntheticBA:
    """Cameras on a 2 m sideways track looking at a box of points 4-12 m ahead.

    Each point is observed by every camera whose image it falls in, at a random pyramid
    level ``l`` (sigma = ``pixel_noise * 1.2^l``, ``inv_sigma2 = 1.2^-2l``). The first
    ``n_fixed`` cameras are fixed at ground truth; the others' initial poses and all initial
    points are perturbed (``pose_noise`` rad / m scale, ``point_noise`` m).
    """
    rng = np.random.default_rng(seed)
    T_gt = np.empty((n_kf, 4, 4))
    for m in range(n_kf):
        x = -1.0 + 2.0 * m / max(n_kf - 1, 1)
        T_world_cam = se3_exp(np.r_[x, rng.normal(0, 0.1, 2), rng.normal(0, 0.05, 3)])
        T_gt[m] = se3_inv(T_world_cam)
    xyz_gt = np.c_[rng.uniform(-4, 4, n_pts), rng.uniform(-3, 3, n_pts),
                   rng.uniform(4, 12, n_pts)]
    cams, pts, uvs, urs, ws, outl = [], [], [], [], [], []
    bf = 0.1 * K_DEFAULT[0, 0]
    for m in range(n_kf):
        xyz_cam = transform_points(T_gt[m], xyz_gt)
        uv = xyz_cam[:, :2] / xyz_cam[:, 2:] @ np.diag(K_DEFAULT[[0, 1], [0, 1]]) \
            + K_DEFAULT[:2, 2]
        seen = np.flatnonzero((xyz_cam[:, 2] > 0.1) & (uv[:, 0] >= 0) & (uv[:, 0] < WIDTH)
                              & (uv[:, 1] >= 0) & (uv[:, 1] < HEIGHT))
        n = seen.size
        level = rng.integers(0, 8, n)
        sigma = pixel_noise * 1.2**level
        ur = np.full(n, -1.0)
        st = rng.random(n) < stereo_frac
        ur[st] = uv[seen[st], 0] - bf / xyz_cam[seen[st], 2] + rng.normal(0, 1, st.sum()) \
            * sigma[st]
        uv_obs = uv[seen] + rng.normal(0, 1, (n, 2)) * sigma[:, None]
        bad = rng.random(n) < outlier_frac
        uv_obs[bad] += rng.choice([-1.0, 1.0], (bad.sum(), 2)) * rng.uniform(20, 60,
                                                                            (bad.sum(), 2))
        cams.append(np.full(n, m))
        pts.append(seen)
        uvs.append(uv_obs)
        urs.append(ur)
        ws.append(1.2 ** (-2.0 * level))
        outl.append(bad)
    fixed = np.zeros(n_kf, bool)
    fixed[:n_fixed] = True
    T0 = T_gt.copy()
    for m in range(n_fixed, n_kf):
        T0[m] = se3_exp(rng.normal(0, pose_noise, 6)) @ T_gt[m]
    xyz0 = xyz_gt + rng.normal(0, point_noise, xyz_gt.shape)
    problem = BAProblem(
        T_cam_world=T0, fixed_cams=fixed, xyz_world=xyz0,
        obs_cam=np.concatenate(cams).astype(np.int32),
        obs_pt=np.concatenate(pts).astype(np.int32),
        obs_uv=np.concatenate(uvs), obs_u_right=np.concatenate(urs),
        obs_inv_sigma2=np.concatenate(ws), K=K_DEFAULT.copy(), bf=bf,
    )
    return SyntheticBA(problem, T_gt, xyz_gt, np.concatenate(outl))


def _median_time(fn: Any, repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def bench_size(n_kf: int, n_pts: int, iterations: int, repeats: int,
               stereo_frac: float) -> dict[str, Any]:
    """Time both solvers on one problem size; returns a JSON-able row."""
    from slam.optim.g2o_ba import build_graph, run_graph  # g2o is optional for the rest

    syn = make_problem(n_kf, n_pts, seed=n_kf, stereo_frac=stereo_frac)
    prob = syn.problem
    t0 = time.perf_counter()
    solve_local_ba(prob, iterations=1)
    jit_s = time.perf_counter() - t0
    nb_s, nb = _median_time(lambda: solve_local_ba(prob, iterations=iterations), repeats)
    whole, solve = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        g2o = run_graph(build_graph(prob), prob, iterations=iterations)
        whole.append(time.perf_counter() - t0)
        solve.append(g2o.solve_seconds)
    g2o_whole_s, g2o_solve_s = statistics.median(whole), statistics.median(solve)
    row = {
        "n_kf": n_kf, "n_pts": n_pts, "n_obs": prob.n_obs, "iterations": iterations,
        "numba_first_call_s": jit_s, "numba_solve_s": nb_s,
        "g2o_solve_s": g2o_solve_s, "g2o_whole_s": g2o_whole_s,
        "ratio_g2o_solve_over_numba": g2o_solve_s / nb_s,
        "ratio_g2o_whole_over_numba": g2o_whole_s / nb_s,
        "numba_initial_cost": nb.initial_cost, "numba_final_cost": nb.final_cost,
        "g2o_initial_cost": g2o.result.initial_cost, "g2o_final_cost": g2o.result.final_cost,
        "numba_iterations": nb.iterations, "g2o_iterations": g2o.result.iterations,
    }
    return row


def _table(rows: list[dict[str, Any]]) -> str:
    head = (f"{'kf':>3} {'pts':>5} {'obs':>6} | {'numba ms':>9} {'jit s':>6} | "
            f"{'g2o solve':>9} {'g2o whole':>9} | {'x solve':>7} {'x whole':>7} | "
            f"{'cost numba':>11} {'cost g2o':>11}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['n_kf']:>3} {r['n_pts']:>5} {r['n_obs']:>6} | {1e3 * r['numba_solve_s']:>9.2f} "
            f"{r['numba_first_call_s']:>6.2f} | {1e3 * r['g2o_solve_s']:>9.2f} "
            f"{1e3 * r['g2o_whole_s']:>9.2f} | {r['ratio_g2o_solve_over_numba']:>7.2f} "
            f"{r['ratio_g2o_whole_over_numba']:>7.2f} | {r['numba_final_cost']:>11.2f} "
            f"{r['g2o_final_cost']:>11.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("results/ba.json"))
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--stereo-frac", type=float, default=0.0)
    ap.add_argument("--sizes", type=str, default=",".join(f"{k}x{p}" for k, p in SIZES),
                    help="comma-separated KFxPOINTS, e.g. 5x500,10x2000")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    rows = []
    for n_kf, n_pts in sizes:
        log.info("benchmarking %d keyframes / %d points ...", n_kf, n_pts)
        rows.append(bench_size(n_kf, n_pts, args.iterations, args.repeats, args.stereo_frac))
    sys.stdout.write(_table(rows) + "\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows}, indent=2))
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

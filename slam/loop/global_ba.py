"""Global bundle adjustment after a loop, in a background thread.

The problem is built from a snapshot of the map; the solve runs without the map
lock (Numba, GIL released) and stops when a new loop sets the abort flag. The
result is applied with local mapping paused: optimised keyframes and points take
their new values, keyframes created meanwhile follow their spanning-tree parent,
and points created meanwhile follow their reference keyframe.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

import numpy as np
from numpy.typing import NDArray

from slam.geometry.lie import se3_inv
from slam.map.map import Map
from slam.mapping.bundle import LocalProblem, build_global_problem
from slam.optim.local_ba import problem_with_estimate, solve_local_ba

log = logging.getLogger(__name__)
Array = NDArray[np.float64]


def _propagate(slam_map: Map, T_old: dict[int, Array], T_new: dict[int, Array]) -> None:
    """Give keyframes missing from ``T_new`` their parent's correction (breadth first
    from the optimised ones); fills ``T_old``/``T_new`` for them."""
    pending = [kf for kf in slam_map.good_keyframes() if kf.id not in T_new]
    for _ in range(len(pending) + 1):
        if not pending:
            break
        rest = []
        for kf in pending:
            if kf.parent_id in T_new:
                p = kf.parent_id
                T_old[kf.id] = kf.T_cam_world.copy()
                T_new[kf.id] = kf.T_cam_world @ se3_inv(T_old[p]) @ T_new[p]
            else:
                rest.append(kf)
        pending = rest


def apply_global_ba(
    slam_map: Map, lp: LocalProblem, T_opt: Array, xyz_opt: Array,
) -> None:
    """Write a global BA result back, correcting what was added since it was built."""
    with slam_map.lock:
        # "Old" is the pose now (local BA may have moved it since the snapshot): points
        # created meanwhile and keyframes outside the problem move along from there.
        T_old: dict[int, Array] = {}
        T_new: dict[int, Array] = {}
        for k, T in zip(lp.kf_ids, T_opt):
            kf = slam_map.keyframes.get(k)
            if kf is not None and not kf.bad:
                T_old[k] = kf.T_cam_world.copy()
                T_new[k] = T
        _propagate(slam_map, T_old, T_new)
        in_problem = np.zeros(0, np.int64)
        ids = np.asarray(lp.pids, np.int64)
        if len(ids):
            alive = slam_map.store.alive_mask(ids)
            slam_map.store.set("xyz", ids[alive], xyz_opt[alive])
            in_problem = ids[alive]
        done = set(in_problem.tolist())
        by_ref: dict[int, list[int]] = {}
        for p, mp in slam_map.points.items():
            if p in done:
                continue
            ref = mp.ref_kf_id if mp.ref_kf_id in T_new else next(
                (k for k in mp.observations if k in T_new), -1)
            if ref >= 0:
                by_ref.setdefault(ref, []).append(p)
        for ref, pids in by_ref.items():
            M = se3_inv(T_new[ref]) @ T_old[ref]
            pid_arr = np.asarray(pids, np.int64)
            xyz = slam_map.store.get("xyz", pid_arr)
            slam_map.store.set("xyz", pid_arr, xyz @ M[:3, :3].T + M[:3, 3])
        for k, T in T_new.items():
            kf = slam_map.keyframes.get(k)
            if kf is not None and not kf.bad:
                kf.T_cam_world = T.copy()
        slam_map.update_normals_and_depths(list(slam_map.points))
        slam_map.version += 1


class GlobalBundleAdjuster:
    """Runs one global BA at a time in a daemon thread; a new start aborts the old."""

    def __init__(
        self, slam_map: Map, K: Array, bf: float, iterations: int,
        pause_mapping: Callable[[], AbstractContextManager[object]],
        on_applied: Callable[[], None] = lambda: None,
    ) -> None:
        self.map = slam_map
        self.K = K
        self.bf = bf
        self.iterations = iterations
        self.pause_mapping = pause_mapping
        self.on_applied = on_applied
        self.abort_flag = np.zeros(1, np.int32)
        self._thread: threading.Thread | None = None
        self.runs = 0
        self.ms: list[float] = []

    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def abort(self) -> None:
        """Stop a running BA (its result is dropped) and wait for the thread."""
        self.abort_flag[0] = 1
        if self._thread is not None:
            self._thread.join()
        self._thread = None

    def start(self, threaded: bool = True) -> None:
        """Build the problem now and solve it (in the background when ``threaded``)."""
        self.abort()
        self.abort_flag[0] = 0
        lp = build_global_problem(self.map, self.K, self.bf)
        if lp is None or self.iterations <= 0:
            return
        if threaded:
            self._thread = threading.Thread(target=self._run, args=(lp,), name="global-ba",
                                            daemon=True)
            self._thread.start()
        else:
            self._run(lp)

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def _run(self, lp: LocalProblem) -> None:
        t0 = time.perf_counter()
        try:
            res = solve_local_ba(lp.problem, iterations=max(self.iterations // 2, 1), huber=True,
                                 abort_flag=self.abort_flag)
            if res.aborted:
                return
            res2 = solve_local_ba(problem_with_estimate(lp.problem, res),
                                  iterations=self.iterations, huber=False,
                                  abort_flag=self.abort_flag, exclude_obs=~res.inlier_obs)
            if res2.aborted:
                return
            with self.pause_mapping():
                apply_global_ba(self.map, lp, res2.T_cam_world, res2.xyz_world)
            self.on_applied()
            self.runs += 1
            self.ms.append((time.perf_counter() - t0) * 1e3)
            log.info("global BA after loop: %d keyframes, %d points, cost %.1f -> %.1f "
                     "(%.0f ms)", len(lp.kf_ids), len(lp.pids), res.initial_cost,
                     res2.final_cost, self.ms[-1])
        except Exception:  # a background failure must not take the system down
            log.exception("global bundle adjustment failed")

"""The local mapping thread.

Tracking submits keyframe ids to a bounded queue. For each keyframe the mapper
links it into the covisibility graph, culls recent points, triangulates new
points with its neighbours, fuses duplicates, runs local bundle adjustment
(Numba, GIL released) and culls redundant keyframes. A newly submitted keyframe
sets the abort flag so that a running BA yields. Each keyframe is processed under
``work_lock``, which loop closing holds (:meth:`LocalMapper.paused`) while it corrects
the map; finished keyframes go on to ``on_done`` (the loop closer) with the ids of the
keyframes culled meanwhile, so that place recognition forgets them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import numpy as np

from slam.camera import Calibration
from slam.config import Sensor, SlamConfig
from slam.map.map import Map
from slam.mapping.bundle import build_local_problem, run_local_ba
from slam.mapping.culling import cull_keyframes, cull_recent_points
from slam.mapping.fuse import fuse_into
from slam.mapping.triangulate import triangulate_with
from slam.stages import StageClock
from slam.worker import KeyframeWorker

log = logging.getLogger(__name__)


class LocalMapper(KeyframeWorker):
    """Processes keyframes, in a thread of its own or inline (``threaded=False``)."""

    def __init__(
        self, cfg: SlamConfig, calib: Calibration, sensor: Sensor, slam_map: Map,
        scale_factors: np.ndarray, threaded: bool = True,
        on_done: Callable[[int, list[int]], None] | None = None,
        abort_on_submit: bool = True,
    ) -> None:
        super().__init__("local mapping", cfg.mapping.queue_size, threaded)
        self.cfg = cfg.mapping
        self.sensor = sensor
        self.map = slam_map
        self.K = calib.camera.K
        self.bf = float(calib.stereo_bf or 0.0)
        self.close_depth = calib.max_close_depth_m
        self.stereo_baseline = self.bf / calib.camera.fx if self.bf else 0.0
        self.scale_factors = scale_factors
        self.level_sigma2 = scale_factors**2
        self.abort_flag = np.zeros(1, np.int32)
        # Live: a new keyframe stops a running local BA (ORB-SLAM's InterruptBA), so that
        # mapping turns to it at once. Offline replays let the BA finish: nobody waits
        # on the new keyframe, and a cut BA costs accuracy.
        self.abort_on_submit = abort_on_submit
        self._points_ready = threading.Event()
        self._points_ready.set()
        self._recent: list[int] = []
        # Stage timings: written by the thread, read by timing_medians() and the stats.
        self.clock = StageClock("mapping")
        self.work_lock = threading.RLock()
        self.on_done = on_done
        self.start()

    # --- the link tracking uses --------------------------------------------
    def submit(self, kf_id: int) -> None:
        """Queue a keyframe (blocks while the queue is full: back-pressure); a running
        local BA is asked to stop."""
        self.raise_if_failed()
        if self.threaded:
            if self.abort_on_submit:
                self.abort_flag[0] = 1
            self._points_ready.clear()
        super().submit(kf_id)

    def wait_new_points(self, timeout: float = 60.0) -> None:
        """Wait until the last submitted keyframe's new points are in the map."""
        self._points_ready.wait(timeout)
        self.raise_if_failed()

    def interrupt(self) -> None:
        self.abort_flag[0] = 1

    def paused(self) -> threading.RLock:
        """Context manager that keeps local mapping between keyframes while held."""
        self.abort_flag[0] = 1
        return self.work_lock

    def on_failure(self) -> None:
        self._points_ready.set()

    def handle(self, kf_id: int) -> None:
        self._process_and_hand_over(kf_id)

    def _process_and_hand_over(self, kf_id: int) -> None:
        with self.work_lock:
            self.abort_flag[0] = 0
            culled = self.process(kf_id)
        if self.on_done is not None:
            self.on_done(kf_id, culled)

    def process(self, kf_id: int) -> list[int]:
        """All local-mapping steps for one keyframe; returns the keyframes culled."""
        t0 = time.perf_counter()
        clock = self.clock
        with clock.stage("link"):
            self._link_keyframe(kf_id)
        min_obs = 3 if self.sensor == "mono" else 2
        with clock.stage("cull_points"):
            self._recent = cull_recent_points(self.map, self._recent, kf_id, min_obs,
                                              self.cfg.cull_found_ratio)
        try:
            with clock.stage("triangulate"):
                self._create_points(kf_id)
            if self.queue.empty():
                with clock.stage("fuse"):
                    self._fuse(kf_id)
        finally:
            if self.queue.empty():
                self._points_ready.set()
        culled: list[int] = []
        if self.map.n_keyframes() > 2:
            if self.queue.empty():  # BA only when no newer keyframe waits (ORB-SLAM's rule)
                lp = build_local_problem(self.map, kf_id, self.K, self.bf,
                                         self.cfg.local_ba_keyframes)
                if lp is not None:
                    tb = time.perf_counter()
                    # Only the runs that finished count (an aborted one says little).
                    if run_local_ba(self.map, lp, self.abort_flag, self.cfg.local_ba_iterations):
                        clock.add("local_ba", (time.perf_counter() - tb) * 1e3)
            # Culling always: a mapper that never catches up (a live camera faster than
            # mapping) would otherwise keep every keyframe and grow without bound.
            with clock.stage("cull_keyframes"):
                culled = cull_keyframes(self.map, kf_id, self.cfg.cull_redundant_ratio,
                                        self.close_depth if self.sensor != "mono" else None)
        clock.add("keyframe", (time.perf_counter() - t0) * 1e3)
        return culled

    def timing_medians(self) -> tuple[float, float]:
        """Median ms of the local BA and of the whole keyframe step (0 before any)."""
        return self.clock.median("local_ba"), self.clock.median("keyframe")

    def _link_keyframe(self, kf_id: int) -> None:
        with self.map.lock:
            kf = self.map.keyframes.get(kf_id)
            if kf is None or kf.bad:
                return
            pids, (first,) = self.map.store.gather(kf.point_ids[kf.point_ids >= 0],
                                                   ("first_kf",))
            self._recent.extend(pids[first == kf_id].tolist())
            old = pids[first != kf_id]
            self.map.update_normals_and_depths(old)
            self.map.update_descriptors(old)
            self.map.update_connections(kf_id)

    def _create_points(self, kf_id: int) -> None:
        with self.map.lock:
            kf = self.map.keyframes.get(kf_id)
            if kf is None or kf.bad:
                return
            n = self.cfg.covisible_for_triangulation * (2 if self.sensor == "mono" else 1)
            neighbours = [self.map.keyframes[k] for k in kf.best_covisible(n)]
        for nkf in neighbours:
            if not self.queue.empty() and self.threaded:
                break
            made = triangulate_with(self.map, kf, nkf, self.K, self.level_sigma2,
                                    self.scale_factors, self.sensor == "mono", self.stereo_baseline)
            self._recent.extend(made)

    def _fuse(self, kf_id: int) -> None:
        with self.map.lock:
            kf = self.map.keyframes.get(kf_id)
            if kf is None or kf.bad:
                return
            n = 20 if self.sensor == "mono" else 10
            targets = set(kf.best_covisible(n))
            for t in list(targets):
                targets.update(self.map.keyframes[t].best_covisible(5))
            targets.discard(kf_id)
            targets = {t for t in targets if not self.map.keyframes[t].bad}
            own = [int(p) for p in kf.point_ids[kf.point_ids >= 0]]
        # A point that takes over another re-chooses its descriptor at once (replace_point,
        # ORB-SLAM's order): deferring that to the end of the keyframe cost accuracy
        # (synthetic forward stereo 3.9 -> 4.5 mm, repeatable).
        for t in targets:
            fuse_into(self.map, self.map.keyframes[t], own, self.K, self.scale_factors, self.bf)
        theirs = self.map.points_of(targets)
        fuse_into(self.map, kf, theirs, self.K, self.scale_factors, self.bf)
        with self.map.lock:
            if kf.bad:
                return
            pids = kf.point_ids[kf.point_ids >= 0].tolist()
            self.map.update_descriptors(pids)
            self.map.update_normals_and_depths(pids)
            self.map.update_connections(kf_id)

"""The SLAM system and its narrow face (the offline replay is :mod:`slam.replay`).

:class:`SlamSystem` wires tracking (in the caller's thread), local mapping and loop
closing (in their own) around one map. Everything outside the core (``slam run``, the
service, recorders) uses only this face:

- :meth:`SlamSystem.process` tracks a frame and returns a :class:`TrackResult` (pose,
  state, the frame's tracked keypoints); :meth:`~SlamSystem.prefetch` starts the
  feature work of the frame that comes next while the current one is tracked;
- :meth:`~SlamSystem.status`, :meth:`~SlamSystem.stage_times`,
  :meth:`~SlamSystem.snapshot`, :meth:`~SlamSystem.trajectory`;
- :attr:`~SlamSystem.events`, an :class:`~slam.events.EventBus` on which the threads
  publish :class:`MapDelta`, :class:`LoopClosed` and :class:`MapReset` events as they
  change the map (subscribe with a bounded queue);
- :meth:`~SlamSystem.reset`, :meth:`~SlamSystem.load_map`, :meth:`~SlamSystem.save_map`
  and :meth:`~SlamSystem.map_snapshot` (a copy to save in the background);
- :meth:`~SlamSystem.finish` (catch up, final bundle adjustment) and
  :meth:`~SlamSystem.close` (stop every thread and the dense worker; idempotent).

The types those calls return and the map-file functions the service needs are
re-exported here, so a caller imports from ``slam.system`` alone.
"""

from __future__ import annotations

import logging
import threading
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from slam.camera import Calibration
from slam.config import Sensor, SlamConfig
from slam.dense.worker import DenseOptions, DenseResult, start_dense
from slam.events import (
    Event,
    EventBus,
    KeyframeInfo,
    LoopClosed,
    MapDelta,
    MapReset,
    Subscription,
)
from slam.geometry.lie import se3_inv
from slam.io.types import SensorFrame, Trajectory
from slam.jit_cache import load_cached_kernels
from slam.loop.loop_closing import LoopCloser
from slam.map.changes import point_colors
from slam.map.map import Map
from slam.map.persistence import (
    EncodedMap,
    LoadedMap,
    MapSnapshot,
    encode_snapshot,
    load_map_bytes,
    snapshot_map,
)
from slam.map.pose_log import PoseLog
from slam.mapping.bundle import global_bundle_adjustment
from slam.mapping.initial_ba import initial_bundle_adjustment
from slam.mapping.local_mapping import LocalMapper
from slam.place.factory import make_place_recognizer
from slam.status import SystemSnapshot, SystemStatus
from slam.tracking.state import TrackResult, TrackState
from slam.tracking.tracker import MappingLink, Tracker

__all__ = [
    "EncodedMap", "Event", "EventBus", "KeyframeInfo", "LoadedMap", "LoopClosed", "MapDelta",
    "MapReset", "MapSnapshot", "SlamSystem", "Subscription", "SystemSnapshot", "SystemStatus",
    "TrackResult", "TrackState", "encode_snapshot", "load_map_bytes",
]

log = logging.getLogger(__name__)


# Culled keyframes no logged pose needs are dropped every this many frames.
PRUNE_EVERY_FRAMES = 256


class SlamSystem:
    """Tracking in the caller's thread; local mapping and loop closing in their own.

    ``initial_map`` continues from a loaded map (the first frame relocalises);
    ``localization_only`` tracks against it without changing it (no mapping, no
    loop closing, no new keyframes). ``dense`` fuses the keyframes into a TSDF mesh in
    a background process (:mod:`slam.dense.worker`). Not thread-safe itself: one
    thread calls :meth:`process`, :meth:`reset`, :meth:`load_map` and :meth:`close`.
    """

    def __init__(
        self, cfg: SlamConfig, calib: Calibration, sensor: Sensor, *,
        initial_map: Map | None = None, localization_only: bool = False,
        dense: DenseOptions | None = None,
    ) -> None:
        self.cfg = cfg
        self.calib = calib
        self.sensor = sensor
        self.localization_only = localization_only
        self._dense_options = dense
        self.events = EventBus()
        self._emit_lock = threading.Lock()
        self.n_maps = 1
        self._closed = False
        load_cached_kernels()  # before the first frame, not inside it (slam.jit_cache)
        self._build(initial_map)

    def _build(self, initial_map: Map | None) -> None:
        """The map and the threads around it (at start, reset and load)."""
        cfg, calib, sensor = self.cfg, self.calib, self.sensor
        self.map = initial_map or Map(cfg.features.scale_factor, cfg.features.n_levels)
        self.dense = start_dense(self.map, calib, sensor, self._dense_options)
        self._dense_dropped = False
        scale_factors = cfg.features.scale_factor ** np.arange(cfg.features.n_levels)
        self.place = make_place_recognizer(cfg.place)
        self.mapper: LocalMapper | None = None
        self.loop_closer: LoopCloser | None = None
        link = MappingLink()
        threaded = cfg.system.mapping_threaded(sensor, cfg.tracking.wait_for_mapping)
        if cfg.mapping.enabled and not self.localization_only:
            self.loop_closer = LoopCloser(
                cfg, self.map, self.place, calib.camera.K, float(calib.stereo_bf or 0.0),
                fix_scale=sensor != "mono", pause_mapping=self._pause_mapping,
                on_corrected=self._on_corrected, on_loop=self.events.publish,
                threaded=threaded,
            )
            self.mapper = LocalMapper(cfg, calib, sensor, self.map, scale_factors,
                                      threaded=threaded, on_done=self._keyframe_done,
                                      abort_on_submit=not cfg.tracking.wait_for_mapping)
            link = MappingLink(
                submit=self.mapper.submit, is_idle=self.mapper.is_idle,
                queue_depth=self.mapper.queue_depth, interrupt=self.mapper.interrupt,
                wait_idle=self.mapper.flush, wait_backlog=self.mapper.wait_backlog,
                wait_new_points=self.mapper.wait_new_points,
                on_monocular_init=self._on_monocular_init,
            )
        self.tracker = Tracker(cfg, calib, sensor, self.map, link, self.place,
                               localization_only=self.localization_only)
        self.poses = PoseLog(cfg.system.max_trajectory_poses)
        self._n_processed = 0
        self._lost_since: float | None = None
        if self.map.n_keyframes() > 0:
            self._index_loaded_map()

    def _pause_mapping(self) -> AbstractContextManager[object]:
        return self.mapper.paused() if self.mapper is not None else nullcontext()

    def _on_corrected(self) -> None:
        """Loop closing or global BA moved the map (in their thread)."""
        self.tracker.notify_map_corrected()
        self.dense.on_corrected()
        self._emit("loop closing")

    def _keyframe_done(self, kf_id: int, culled: list[int]) -> None:
        """Local mapping finished a keyframe (in its thread): its changes go out, on to
        dense fusion and loop closing; the keyframes it culled leave place recognition."""
        self._emit("mapping")
        self.dense.submit(kf_id)
        assert self.loop_closer is not None
        self.loop_closer.forget(culled)
        self.loop_closer.submit(kf_id)

    def _emit(self, source: str) -> None:
        """Publish the map's changes since the last emission as one :class:`MapDelta`.
        With nobody listening the record is dropped (a later subscriber starts from a
        snapshot, and the next delta then reports the whole map again)."""
        with self._emit_lock:
            if not self.events.has_subscribers():
                self.map.discard_changes()
                return
            delta = self.map.take_changes(source)
            if not delta.is_empty():
                self.events.publish(delta)

    def _index_loaded_map(self) -> None:
        """Put a loaded map's keyframes into place recognition; tracking relocalises."""
        self.map.release_culled()
        for kf in self.map.good_keyframes():
            desc = self.place.describe(kf.frame.descriptors, kf.frame.pixels())
            self.place.add(kf.id, desc)
            if self.loop_closer is not None:
                self.loop_closer.descriptors[kf.id] = desc
        self.tracker.start_lost()
        log.info("continuing from a map of %d keyframes and %d points%s",
                 self.map.n_keyframes(), self.map.n_points(),
                 " (localisation only)" if self.localization_only else "")

    @property
    def loop_events(self) -> list[LoopClosed]:
        return list(self.loop_closer.events) if self.loop_closer is not None else []

    def _on_monocular_init(self, kf_ids: list[int]) -> None:
        initial_bundle_adjustment(self.map, kf_ids, self.calib.camera.K)

    def prefetch(self, sf: SensorFrame) -> None:
        """Start the feature work (ORB, stereo, depth) of ``sf`` on the feature thread;
        the next :meth:`process` call, which must be for ``sf``, uses it. Optional: a
        caller that knows the next frame calls it before processing the current one."""
        self.tracker.prefetch(sf)

    def process(self, sf: SensorFrame) -> TrackResult:
        """Track one frame; remember its pose relative to its reference keyframe."""
        res = self.tracker.track(sf)
        ref = self.tracker.ref_kf
        if res.T_world_cam is not None and ref is not None:
            T_cam_world = se3_inv(res.T_world_cam)
            with self.map.lock:
                T_cam_ref = T_cam_world @ ref.T_world_cam
            self.poses.append(sf.timestamp, ref.id, T_cam_ref)
        if res.is_keyframe and self.mapper is None:
            # With local mapping, the keyframe's changes go out with mapping's delta for
            # it, a moment later: computing a delta (point colours) under the map lock
            # here would lengthen exactly the frames that are slowest already.
            self._emit("tracking")
        self._watch_lost(res, sf.timestamp)
        self._n_processed += 1
        if self._n_processed % PRUNE_EVERY_FRAMES == 0:
            self.map.prune_culled(self.poses.reference_ids().tolist())
        return res

    def _watch_lost(self, res: TrackResult, stamp: float) -> None:
        """Monocular: start a new map when relocalisation fails for too long."""
        if res.state != TrackState.LOST:
            self._lost_since = None
            return
        if self._lost_since is None:
            self._lost_since = stamp
        limit = self.cfg.relocalization.new_map_after_s
        if (self.sensor == "mono" and not self.localization_only and limit > 0
                and stamp - self._lost_since >= limit):
            self.start_new_map()

    def start_new_map(self) -> None:
        """Keep the poses tracked so far, forget the map, initialise again."""
        if self.mapper is not None:
            self.mapper.flush()
        if self.loop_closer is not None:
            self.loop_closer.flush()
        with self.map.lock:
            self.poses.freeze(self.map)
            self.map.clear()
        if self.loop_closer is not None:
            self.loop_closer.reset()
        else:
            self.place.clear()
        self.tracker.reset()
        self._lost_since = None
        self.n_maps += 1
        self.events.publish(MapReset("new map"))
        log.warning("relocalisation failed for %.1f s: started map number %d (poses of the "
                    "earlier maps are kept in their own frames)",
                    self.cfg.relocalization.new_map_after_s, self.n_maps)

    def reset(self) -> None:
        """Start again with an empty map (tracking initialises on the next frame)."""
        self._replace(None, "reset")

    def load_map(self, slam_map: Map) -> None:
        """Continue from ``slam_map`` (a loaded map: :func:`load_map_bytes`); the next
        frame relocalises in it."""
        self._replace(slam_map, "loaded")

    def _replace(self, slam_map: Map | None, reason: str) -> None:
        self._stop_threads()
        self._build(slam_map)
        self.events.publish(MapReset(reason))
        self._emit(reason)

    def map_snapshot(self) -> MapSnapshot:
        """A copy of the map to save (:func:`encode_snapshot`), taken with local mapping
        paused between keyframes and the map lock held; tracking goes on."""
        with self._pause_mapping():
            return snapshot_map(self.map, {"loops": [vars(e) for e in self.loop_events]})

    def status(self) -> SystemStatus:
        """The counts of the system now."""
        mapper, closer = self.mapper, self.loop_closer
        ba_ms, kf_ms = mapper.timing_medians() if mapper is not None else (0.0, 0.0)
        return SystemStatus(
            keyframes=self.map.n_keyframes(), map_points=self.map.n_points(),
            loops_closed=len(self.loop_events),
            relocalisations=int(self.tracker.relocalizations), maps=self.n_maps,
            mapping_queue=mapper.queue_depth() if mapper is not None else 0,
            loop_queue=closer.queue_depth() if closer is not None else 0,
            poses_dropped=self.poses.dropped,
            local_ba_ms_median=ba_ms, keyframe_ms_median=kf_ms)

    def stage_times(self) -> dict[str, dict[str, dict[str, float]]]:
        """Where the time went since the start (or the last reset or map load):
        ``{thread: {stage: {"n", "median_ms", "p99_ms", "mean_ms", "total_s"}}}``
        for tracking, the feature worker, local mapping and loop closing
        (:class:`~slam.stages.StageClock`; a stage includes the stages nested in it)."""
        clocks = [self.tracker.clock, self.tracker.builder.clock]
        clocks += [w.clock for w in (self.mapper, self.loop_closer) if w is not None]
        return {c.thread: c.summary() for c in clocks}

    def snapshot(self, points: bool = False) -> SystemSnapshot:
        """Keyframes, trajectory and loops now; with ``points`` the map points too (with
        their colours: a few milliseconds per thousand points)."""
        m = self.map
        extra: dict[str, Any] = {}
        with m.lock:
            kfs = tuple(KeyframeInfo(kf.id, kf.timestamp, kf.T_world_cam,
                                     len(m.store.alive_ids(kf.point_ids[kf.point_ids >= 0])))
                        for kf in sorted(m.good_keyframes(), key=lambda k: k.id))
            if points:
                ids = m.store.live_ids()
                extra = {"point_ids": ids, "point_xyz": m.store.get("xyz", ids),
                         "point_rgb": point_colors(m, ids)}
        return SystemSnapshot(kfs, self.trajectory(), tuple(self.loop_events), **extra)

    def trajectory(self) -> Trajectory:
        """Every tracked frame's world-from-camera pose, with keyframe corrections
        (the newest ``system.max_trajectory_poses`` when that is set)."""
        stamps, T_world_cam = self.poses.trajectory(self.map)
        return Trajectory(stamps, T_world_cam)

    def save_map(self, path: str | Path) -> None:
        """Let mapping and loop closing settle, then write the map atomically."""
        from slam.map.persistence import save_map

        self.flush()
        with self._pause_mapping():
            save_map(path, self.map, self.calib, self.sensor,
                     extra={"loops": [vars(e) for e in self.loop_events]})

    def flush(self) -> None:
        """Wait until local mapping and loop closing have caught up."""
        if self.mapper is not None:
            self.mapper.flush()
        if self.loop_closer is not None:
            self.loop_closer.flush()
        if self.mapper is not None:
            self.mapper.flush()

    def finish(self, final_ba: bool = True) -> None:
        """Let local mapping and loop closing catch up, stop them, then a final global BA
        (``final_ba=False`` leaves it out and stops dense fusion without a mesh, to stop
        quickly)."""
        if not final_ba:
            self._dense_dropped = True
            self.dense.close()
        try:
            if self.mapper is not None:
                self.flush()
                self.mapper.stop()
                if self.loop_closer is not None:
                    self.loop_closer.stop()
                n_iter = self.cfg.mapping.final_global_ba_iterations if final_ba else 0
                if n_iter > 0 and self.map.n_keyframes() > 2:
                    global_bundle_adjustment(self.map, self.calib.camera.K,
                                             float(self.calib.stereo_bf or 0.0), n_iter)
                    self._emit("global bundle adjustment")
        finally:
            self.tracker.close()  # the feature threads, also when mapping failed

    def dense_mesh(self) -> DenseResult | None:
        """After :meth:`finish`: fuse what dense mapping has pending with the final poses
        and write the mesh; None without ``dense``, after ``finish(final_ba=False)`` or
        when the dense worker failed (logged)."""
        if self._dense_dropped:
            return None
        self._dense_dropped = True
        return self.dense.finish()

    def close(self) -> None:
        """Stop local mapping, loop closing, tracking's workers and the dense worker,
        without a final bundle adjustment (idempotent; safe after :meth:`finish`)."""
        if not self._closed:
            self._closed = True
            self._stop_threads()

    def _stop_threads(self) -> None:
        try:
            if self.mapper is not None:
                self.mapper.stop()
            if self.loop_closer is not None:
                self.loop_closer.stop()
        finally:
            self.tracker.close()
            self.dense.close()

    def __enter__(self) -> SlamSystem:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

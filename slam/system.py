"""The system that wires tracking, local mapping and the map together (the offline
replay is :mod:`slam.replay`)."""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np

from slam.camera import Calibration
from slam.config import Sensor, SlamConfig
from slam.dense.worker import DenseOptions, start_dense
from slam.geometry.lie import se3_inv
from slam.io.types import SensorFrame, Trajectory
from slam.loop.loop_closing import LoopCloser, LoopEvent
from slam.map.map import Map
from slam.map.pose_log import PoseLog
from slam.mapping.bundle import global_bundle_adjustment
from slam.mapping.initial_ba import initial_bundle_adjustment
from slam.mapping.local_mapping import LocalMapper
from slam.place.recognizer import make_place_recognizer
from slam.tracking.state import TrackResult, TrackState
from slam.tracking.tracker import MappingLink, Tracker

log = logging.getLogger(__name__)


# Culled keyframes no logged pose needs are dropped every this many frames.
PRUNE_EVERY_FRAMES = 256


class SlamSystem:
    """Tracking in the caller's thread; local mapping and loop closing in their own.

    ``initial_map`` continues from a loaded map (the first frame relocalises);
    ``localization_only`` tracks against it without changing it (no mapping, no
    loop closing, no new keyframes). ``dense`` fuses the keyframes into a TSDF mesh in
    a background process (:mod:`slam.dense.worker`).
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
        self.map = initial_map or Map(cfg.features.scale_factor, cfg.features.n_levels)
        self.dense = start_dense(self.map, calib, sensor, dense)
        scale_factors = cfg.features.scale_factor ** np.arange(cfg.features.n_levels)
        self.place = make_place_recognizer(cfg.place)
        self.mapper: LocalMapper | None = None
        self.loop_closer: LoopCloser | None = None
        link = MappingLink()
        threaded = cfg.system.mapping_threaded(sensor, cfg.tracking.wait_for_mapping)
        if cfg.mapping.enabled and not localization_only:
            self.loop_closer = LoopCloser(
                cfg, self.map, self.place, calib.camera.K, float(calib.stereo_bf or 0.0),
                fix_scale=sensor != "mono", pause_mapping=self._pause_mapping,
                on_corrected=self._on_corrected, threaded=threaded,
            )
            self.mapper = LocalMapper(cfg, calib, sensor, self.map, scale_factors,
                                      threaded=threaded, on_done=self._keyframe_done)
            link = MappingLink(
                submit=self.mapper.submit, is_idle=self.mapper.is_idle,
                queue_depth=self.mapper.queue_depth, interrupt=self.mapper.interrupt,
                wait_idle=self.mapper.flush, wait_new_points=self.mapper.wait_new_points,
                on_monocular_init=self._on_monocular_init,
            )
        self.tracker = Tracker(cfg, calib, sensor, self.map, link, self.place,
                               localization_only=localization_only)
        self.poses = PoseLog(cfg.system.max_trajectory_poses)
        self._n_processed = 0
        self.n_maps = 1
        self._lost_since: float | None = None
        if self.map.n_keyframes() > 0:
            self._index_loaded_map()

    def _pause_mapping(self) -> AbstractContextManager[object]:
        return self.mapper.paused() if self.mapper is not None else nullcontext()

    def _on_corrected(self) -> None:
        self.tracker.notify_map_corrected()
        self.dense.on_corrected()

    def _keyframe_done(self, kf_id: int, culled: list[int]) -> None:
        """Local mapping finished a keyframe: on to dense fusion and loop closing; the
        keyframes it culled leave place recognition."""
        self.dense.submit(kf_id)
        assert self.loop_closer is not None
        self.loop_closer.forget(culled)
        self.loop_closer.submit(kf_id)

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
    def loop_events(self) -> list[LoopEvent]:
        return list(self.loop_closer.events) if self.loop_closer is not None else []

    def _on_monocular_init(self, kf_ids: list[int]) -> None:
        initial_bundle_adjustment(self.map, kf_ids, self.calib.camera.K)

    def process(self, sf: SensorFrame) -> TrackResult:
        """Track one frame; remember its pose relative to its reference keyframe."""
        res = self.tracker.track(sf)
        ref = self.tracker.ref_kf
        if res.T_world_cam is not None and ref is not None:
            T_cam_world = se3_inv(res.T_world_cam)
            with self.map.lock:
                T_cam_ref = T_cam_world @ ref.T_world_cam
            self.poses.append(sf.timestamp, ref.id, T_cam_ref)
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
        log.warning("relocalisation failed for %.1f s: started map number %d (poses of the "
                    "earlier maps are kept in their own frames)",
                    self.cfg.relocalization.new_map_after_s, self.n_maps)

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
        (``final_ba=False`` leaves it out, to stop quickly)."""
        if self.mapper is not None:
            self.flush()
            self.mapper.stop()
            if self.loop_closer is not None:
                self.loop_closer.stop()
            n_iter = self.cfg.mapping.final_global_ba_iterations if final_ba else 0
            if n_iter > 0 and self.map.n_keyframes() > 2:
                global_bundle_adjustment(self.map, self.calib.camera.K,
                                         float(self.calib.stereo_bf or 0.0), n_iter)
        self.tracker.close()

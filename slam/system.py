"""The system that wires tracking, local mapping and the map together, and the
offline replay used by ``slam run``."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from slam.camera import Calibration
from slam.config import Sensor, SlamConfig
from slam.errors import SensorError
from slam.geometry.lie import se3_inv
from slam.io.sources.base import BoundedReader, FrameSource
from slam.io.types import SensorFrame, Trajectory
from slam.map.map import Map
from slam.mapping.bundle import global_bundle_adjustment
from slam.mapping.initial_ba import initial_bundle_adjustment
from slam.mapping.local_mapping import LocalMapper
from slam.tracking.state import TrackResult, TrackState
from slam.tracking.tracker import MappingLink, Tracker

log = logging.getLogger(__name__)


@dataclass
class _PoseRecord:
    stamp: float
    ref_kf_id: int
    T_cam_ref: NDArray[np.float64]


class SlamSystem:
    """Tracking in the caller's thread, local mapping in its own."""

    def __init__(self, cfg: SlamConfig, calib: Calibration, sensor: Sensor) -> None:
        self.cfg = cfg
        self.calib = calib
        self.sensor = sensor
        self.map = Map(cfg.features.scale_factor, cfg.features.n_levels)
        scale_factors = cfg.features.scale_factor ** np.arange(cfg.features.n_levels)
        self.mapper: LocalMapper | None = None
        link = MappingLink()
        if cfg.mapping.enabled:
            self.mapper = LocalMapper(cfg, calib, sensor, self.map, scale_factors,
                                      threaded=cfg.system.mapping_threaded(
                                          sensor, cfg.tracking.wait_for_mapping))
            link = MappingLink(
                submit=self.mapper.submit, is_idle=self.mapper.is_idle,
                queue_depth=self.mapper.queue_depth, interrupt=self.mapper.interrupt,
                wait_idle=self.mapper.flush, wait_new_points=self.mapper.wait_new_points,
                on_monocular_init=self._on_monocular_init,
            )
        self.tracker = Tracker(cfg, calib, sensor, self.map, link)
        self._records: list[_PoseRecord] = []

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
            self._records.append(_PoseRecord(sf.timestamp, ref.id, T_cam_ref))
        return res

    def keyframe_T_cam_world(self, kf_id: int) -> NDArray[np.float64]:
        """Current pose of a keyframe; a culled one follows its parent chain."""
        with self.map.lock:
            kf = self.map.keyframes[kf_id]
            T_rel = np.eye(4)
            hops = 0
            while kf.bad and kf.T_cam_parent is not None and hops < 1000:
                T_rel = T_rel @ kf.T_cam_parent
                kf = self.map.keyframes[kf.parent_id]
                hops += 1
            return T_rel @ kf.T_cam_world

    def trajectory(self) -> Trajectory:
        """Every tracked frame's world-from-camera pose, with keyframe corrections."""
        if not self._records:
            return Trajectory(np.zeros(0), np.zeros((0, 4, 4)))
        stamps = np.array([r.stamp for r in self._records])
        poses = np.array([
            se3_inv(r.T_cam_ref @ self.keyframe_T_cam_world(r.ref_kf_id)) for r in self._records
        ])
        return Trajectory(stamps, poses)

    def finish(self) -> None:
        """Let local mapping catch up, then stop it."""
        if self.mapper is not None:
            self.mapper.flush()
            self.mapper.stop()
            n_iter = self.cfg.mapping.final_global_ba_iterations
            if n_iter > 0 and self.map.n_keyframes() > 2:
                global_bundle_adjustment(self.map, self.calib.camera.K,
                                         float(self.calib.stereo_bf or 0.0), n_iter)
        self.tracker.close()


@dataclass
class RunResult:
    """Outcome of an offline run."""

    trajectory: Trajectory
    stats: dict[str, float | int] = field(default_factory=dict)
    track_ms: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))


def run_offline(
    source: FrameSource, sensor: Sensor, calibration: Calibration, config: SlamConfig,
    *, realtime: bool = False, progress: bool = True,
) -> RunResult:
    """Replay a source through the system; returns the trajectory and statistics."""
    if sensor not in source.sensors:
        raise SensorError(f"source {source.name} cannot feed a {sensor} system "
                          f"(it offers {', '.join(sorted(source.sensors))})")
    system = SlamSystem(config, calibration, sensor)
    track_ms: list[float] = []
    n_frames = n_tracked = n_lost = 0
    t0 = time.perf_counter()
    total = source.length
    from tqdm import tqdm

    with BoundedReader(iter(source), maxsize=config.system.frame_queue_size,
                       realtime=realtime) as reader:
        bar = tqdm(reader, total=total, disable=not progress, unit="frame", leave=False)
        try:
            for sf in bar:
                res = system.process(sf)
                n_frames += 1
                track_ms.append(res.track_ms)
                if res.T_world_cam is not None:
                    n_tracked += 1
                elif res.state == TrackState.LOST:
                    n_lost += 1
                bar.set_postfix(state=res.state.value, kf=system.map.n_keyframes(), refresh=False)
        finally:
            bar.close()
            system.finish()
    wall = time.perf_counter() - t0
    ms = np.array(track_ms)
    mapper = system.mapper
    stats: dict[str, float | int] = {
        "frames": n_frames,
        "tracked_frames": n_tracked,
        "lost_frames": n_lost,
        "keyframes": system.map.n_keyframes(),
        "map_points": system.map.n_points(),
        "wall_s": wall,
        "fps": n_frames / wall if wall > 0 else 0.0,
        "track_ms_median": float(np.median(ms)) if len(ms) else 0.0,
        "track_ms_p95": float(np.percentile(ms, 95)) if len(ms) else 0.0,
        "track_ms_p99": float(np.percentile(ms, 99)) if len(ms) else 0.0,
        "local_ba_ms_median": float(np.median(mapper.ba_ms)) if mapper and mapper.ba_ms else 0.0,
        "keyframe_ms_median": float(np.median(mapper.kf_ms)) if mapper and mapper.kf_ms else 0.0,
    }
    return RunResult(system.trajectory(), stats, ms)

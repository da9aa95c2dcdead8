"""The tracker: motion model, reference keyframe, local map, keyframe decision.

One call of :meth:`Tracker.track` per frame. The tracker reads the shared map
under its lock, estimates the pose without holding it, and hands new keyframe
ids to local mapping through a :class:`MappingLink`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from slam.camera import Calibration
from slam.config import Sensor, SlamConfig
from slam.features.matching import match_ratio
from slam.geometry.lie import orthonormalize_pose, se3_inv
from slam.io.types import SensorFrame
from slam.map.frame import Frame
from slam.map.keyframe import KeyFrame
from slam.map.map import Map
from slam.optim.pose_only import optimize_pose
from slam.place.recognizer import PlaceRecognizer
from slam.stages import StageClock
from slam.tracking.frontend import FrameBuilder
from slam.tracking.initializer import MonocularInitializer, add_depth_points, initialize_from_depth
from slam.tracking.keyframe_policy import KeyframeEvidence, KeyframePolicy
from slam.tracking.local_map import local_keyframes, search_local_points
from slam.tracking.projection import match_projected, project_into
from slam.tracking.relocalization import recover_from_local_map, relocalize
from slam.tracking.state import TrackResult, TrackState
from slam.tracking.subpixel import SubpixelRefiner

log = logging.getLogger(__name__)


@dataclass
class MappingLink:
    """How tracking talks to local mapping (a null link when mapping is off)."""

    submit: Callable[[int], None] = lambda kf_id: None
    is_idle: Callable[[], bool] = lambda: True
    queue_depth: Callable[[], int] = lambda: 0
    interrupt: Callable[[], None] = lambda: None
    wait_idle: Callable[[], None] = lambda: None
    wait_backlog: Callable[[int], None] = lambda max_pending: None
    wait_new_points: Callable[[], None] = lambda: None
    on_monocular_init: Callable[[list[int]], None] = lambda kf_ids: None


class Tracker:
    """Estimates the pose of each frame against the shared map."""

    def __init__(
        self, cfg: SlamConfig, calib: Calibration, sensor: Sensor, slam_map: Map,
        mapping: MappingLink | None = None, place: PlaceRecognizer | None = None,
        *, localization_only: bool = False,
    ) -> None:
        self.cfg = cfg
        self.tcfg = cfg.tracking
        self.calib = calib
        self.sensor = sensor
        self.map = slam_map
        self.mapping = mapping or MappingLink()
        self.place = place
        self.localization_only = localization_only
        self.K = calib.camera.K
        self.builder = FrameBuilder(calib, cfg.features, sensor)
        self.clock = StageClock("tracking")
        self.bf = self.builder.bf
        self.subpixel = self.tcfg.subpixel_mode(sensor)
        self.refiner = (SubpixelRefiner(calib.camera, self.builder.scale_factors,
                                        self.tcfg.subpixel_max_shift)
                        if self.subpixel != "off" else None)
        self.close_depth = calib.max_close_depth_m or self.tcfg.default_close_depth_m
        self.keyframes = KeyframePolicy(self.tcfg, sensor)
        self.state = TrackState.INITIALIZING
        self.mono_init = self._new_initializer()
        self.last_frame: Frame | None = None
        self.velocity: NDArray[np.float64] | None = None  # T_cur_last
        self.ref_kf: KeyFrame | None = None
        self.last_kf_frame_id = 0
        self.local_kf_ids: list[int] = []
        self.n_inliers = 0
        self._frame_counter = 0
        self._recovered_at = -10
        self.relocalizations = 0
        self._last_T_cam_ref: tuple[int, NDArray[np.float64]] | None = None
        self._map_corrected = False

    def _new_initializer(self) -> MonocularInitializer | None:
        """A fresh two-view initialiser for monocular tracking (None otherwise)."""
        if self.sensor != "mono":
            return None
        return MonocularInitializer(self.K, self.tcfg.min_init_map_points, self.tcfg.init_seed)

    def notify_map_corrected(self) -> None:
        """Loop closing moved keyframes: re-pose the last frame before the next one."""
        self._map_corrected = True

    def start_lost(self) -> None:
        """Begin against an existing (loaded) map: the first frame relocalises."""
        self.state = TrackState.LOST
        self.mono_init = None

    def reset(self) -> None:
        """Forget the tracking state (the map was cleared for a new one)."""
        self.state = TrackState.INITIALIZING
        self.mono_init = self._new_initializer()
        self.last_frame = None
        self.velocity = None
        self.ref_kf = None
        self.local_kf_ids = []
        self._last_T_cam_ref = None

    # ------------------------------------------------------------------ entry
    def _for_init(self) -> bool:
        """Whether the next frame is for monocular initialisation (more features)."""
        return self.state == TrackState.INITIALIZING and self.sensor == "mono"

    def prefetch(self, sf: SensorFrame) -> None:
        """Start the feature work of the frame :meth:`track` gets next, in the
        background (see :class:`FrameBuilder`)."""
        self.builder.prefetch(sf, for_init=self._for_init())

    def track(self, sf: SensorFrame) -> TrackResult:
        """Track one frame and return its pose (world-from-camera) or None."""
        t0 = time.perf_counter()
        fid = self._frame_counter
        self._frame_counter += 1
        is_kf = False
        with self.clock.stage("features"):
            frame = self.builder.build(sf, fid, for_init=self._for_init())
        if self._map_corrected:
            self._rebase_last_frame()
        if self.state == TrackState.INITIALIZING:
            with self.clock.stage("initialize"):
                ok = self._initialize(frame)
            is_kf = ok
        else:
            ok = self._track_frame(frame, sf.image)
            if ok:
                with self.clock.stage("keyframe"):
                    is_kf = self._maybe_insert_keyframe(frame, sf.image)
        if ok and frame.T_cam_world is not None:
            self._after_success(frame)
        elif self.state != TrackState.INITIALIZING:
            self.state = TrackState.LOST
            self.velocity = None
            frame.T_cam_world = None
        ms = (time.perf_counter() - t0) * 1e3
        tracked = ok and frame.T_cam_world is not None
        pose = frame.T_world_cam if tracked else None
        uv = frame.uv[(frame.point_ids >= 0) & ~frame.outlier] if tracked else np.zeros((0, 2))
        return TrackResult(fid, sf.timestamp, self.state, pose, self.n_inliers, is_kf, ms, uv,
                           relocalized=tracked and self._recovered_at == fid)

    def _after_success(self, frame: Frame) -> None:
        if self.last_frame is not None and self.last_frame.T_cam_world is not None:
            assert frame.T_cam_world is not None
            frame.T_cam_world = orthonormalize_pose(frame.T_cam_world)
            self.velocity = orthonormalize_pose(
                frame.T_cam_world @ se3_inv(self.last_frame.T_cam_world)
            )
        self.state = TrackState.TRACKING
        self.last_frame = frame
        if self.ref_kf is not None:
            assert frame.T_cam_world is not None
            with self.map.lock:
                T_cam_ref = frame.T_cam_world @ self.ref_kf.T_world_cam
            self._last_T_cam_ref = (self.ref_kf.id, T_cam_ref)

    def _rebase_last_frame(self) -> None:
        """After a loop correction the last frame's pose follows its reference keyframe."""
        self._map_corrected = False
        if self.last_frame is None or self._last_T_cam_ref is None:
            return
        ref_id, T_cam_ref = self._last_T_cam_ref
        if ref_id in self.map.keyframes:
            self.last_frame.T_cam_world = T_cam_ref @ self.map.keyframe_pose(ref_id)

    # ---------------------------------------------------------- initialisation
    def _initialize(self, frame: Frame) -> bool:
        if self.sensor != "mono":
            kf = initialize_from_depth(self.map, frame, self.K, self.close_depth)
            if kf is None:
                return False
            self._register_keyframe(kf)
            self.mapping.submit(kf.id)
            return True
        assert self.mono_init is not None
        out = self.mono_init.try_initialize(frame)
        if out is None:
            return False
        return self._create_monocular_map(frame, *out)

    def _create_monocular_map(
        self, frame: Frame, ref: Frame, T_21: NDArray[np.float64], i_ref: NDArray[np.int64],
        i_cur: NDArray[np.int64], xyz_cam1: NDArray[np.float64],
    ) -> bool:
        ref.T_cam_world = np.eye(4)
        frame.T_cam_world = T_21.copy()
        kf1 = KeyFrame(self.map.new_keyframe_id(), ref, np.eye(4))
        kf2 = KeyFrame(self.map.new_keyframe_id(), frame, T_21.copy())
        with self.map.lock:
            self.map.add_keyframe(kf1)
            self.map.add_keyframe(kf2)
            made = []
            for a, b, xyz in zip(i_ref, i_cur, xyz_cam1):
                mp = self.map.add_point(xyz, kf1, int(a))
                self.map.add_observation(mp.id, kf2.id, int(b))
                made.append(mp.id)
            self.map.update_normals_and_depths(made)
            self.map.update_connections(kf1.id)
            self.map.update_connections(kf2.id)
        self.mapping.on_monocular_init([kf1.id, kf2.id])
        if self.map.n_points() < self.tcfg.mono_init_min_points:
            log.warning("monocular initialisation left too few points; retrying")
            self.map.clear()
            ref.point_ids[:] = -1
            frame.point_ids[:] = -1
            return False
        frame.T_cam_world = kf2.T_cam_world.copy()
        self.last_frame = ref
        self._register_keyframe(kf2)
        self.mapping.submit(kf1.id)
        self.mapping.submit(kf2.id)
        self.n_inliers = len(i_cur)
        return True

    def _register_keyframe(self, kf: KeyFrame) -> None:
        self.ref_kf = kf
        self.last_kf_frame_id = kf.frame.id
        self.local_kf_ids = [kf.id]

    # ---------------------------------------------------------------- tracking
    def _track_frame(self, frame: Frame, image: NDArray[np.uint8]) -> bool:
        if self.sensor == "mono" and self.tcfg.wait_for_mapping:
            # A monocular map grows only by triangulation: let the last keyframe's
            # new points arrive before matching (stereo/RGB-D points come from depth).
            with self.clock.stage("wait_mapping"):
                self.mapping.wait_new_points()
        ok = False
        with self.clock.stage("pose"):
            if self.state == TrackState.TRACKING and self.velocity is not None:
                ok = self._track_motion_model(frame)
            if not ok and self.state == TrackState.TRACKING:
                ok = self._track_reference_keyframe(frame)
        if not ok:
            with self.clock.stage("recover"):
                ok = self._recover(frame)
        if ok:
            with self.clock.stage("local_map"):
                ok = self._track_local_map(frame, image)
        return ok

    def _refine_and_optimize(self, frame: Frame, image: NDArray[np.uint8], n_inliers: int
                             ) -> int:
        """Sub-pixel refinement of the (inlier) matches of an optimised frame, the pose
        again, and once more when the refined keypoints proved precise enough to weigh
        more. ``n_inliers``: the frame's inliers now. Returns the inliers after."""
        assert self.refiner is not None
        refined = self.refiner.refine(frame, image, self.map)
        if len(refined) == 0:
            return n_inliers
        n = self._optimize(frame)
        if self.refiner.weigh(frame, refined, self.map) > 1.0:
            n = self._optimize(frame)
        return n

    def _optimize(self, frame: Frame) -> int:
        """Pose-only optimisation on the frame's matches; drops outliers; returns inliers."""
        idx = np.flatnonzero(frame.point_ids >= 0)
        if len(idx) < 3:
            return 0
        pts = self.map.point_arrays(frame.point_ids[idx])  # input order, erased ones dropped
        valid = pts.found
        frame.point_ids[idx[~valid]] = -1
        idx = idx[valid]
        xyz = pts.xyz_world
        if len(idx) < 3:
            return 0
        assert frame.T_cam_world is not None
        T, inl = optimize_pose(
            frame.T_cam_world, xyz, frame.uv[idx], frame.inv_sigma2[idx], self.K,
            frame.u_right[idx], self.bf, iterations=self.tcfg.pose_iterations,
        )
        frame.T_cam_world = T
        frame.point_ids[idx[~inl]] = -1
        return int(inl.sum())

    def _track_motion_model(self, frame: Frame) -> bool:
        last = self.last_frame
        assert last is not None and last.T_cam_world is not None and self.velocity is not None
        frame.T_cam_world = self.velocity @ last.T_cam_world
        radius = self.tcfg.motion_radius_px
        n = self._match_last_frame(frame, last, radius)
        if n < self.tcfg.motion_min_matches:
            frame.point_ids[:] = -1
            n = self._match_last_frame(frame, last, 2 * radius)
        if n < self.tcfg.motion_min_matches:
            return False
        return self._optimize(frame) >= self.tcfg.pose_min_inliers

    def _match_last_frame(self, frame: Frame, last: Frame, radius: float) -> int:
        last_ids = last.point_ids.copy()  # local mapping may edit a keyframe's ids meanwhile
        idx = np.flatnonzero(last_ids >= 0)
        pts = self.map.point_arrays(last_ids[idx])  # input order, erased ones dropped
        if len(pts) == 0:
            return 0
        idx = idx[pts.found]
        assert frame.T_cam_world is not None
        proj = project_into(frame, frame.T_cam_world, self.K, pts.xyz_world, None, None, None,
                            self.cfg.features.scale_factor, self.cfg.features.n_levels)
        proj.level = last.octave[idx[proj.keep]]
        scale = self.builder.scale_factors[proj.level]
        sel, kp = match_projected(frame, proj, last.descriptors[idx], radius * scale,
                                  th_high=self.tcfg.hamming_threshold_high,
                                  ratio=self.tcfg.last_frame_match_ratio)
        frame.point_ids[kp] = pts.ids[sel]
        return len(kp)

    def _track_reference_keyframe(self, frame: Frame) -> bool:
        ref = self.ref_kf
        if ref is None or self.last_frame is None or self.last_frame.T_cam_world is None:
            return False
        n = self._match_descriptors(frame, ref)
        if n < self.tcfg.reference_min_matches:
            return False
        frame.T_cam_world = self.last_frame.T_cam_world.copy()
        return self._optimize(frame) >= self.tcfg.pose_min_inliers

    def _match_descriptors(self, frame: Frame, kf: KeyFrame) -> int:
        """Brute-force matches from the keyframe's map points to the frame's keypoints."""
        with self.map.lock:
            kp_idx = np.flatnonzero(kf.point_ids >= 0)
            pids = kf.point_ids[kp_idx].copy()
        if len(kp_idx) == 0:
            return 0
        i1, i2 = match_ratio(kf.frame.descriptors[kp_idx], frame.descriptors,
                             ratio=self.tcfg.reference_match_ratio,
                             th=self.tcfg.hamming_threshold_high)
        frame.point_ids[:] = -1
        frame.point_ids[i2] = pids[i1]
        return len(i1)

    def _recover(self, frame: Frame) -> bool:
        """Motion model and reference keyframe failed (or the tracker is lost):
        relocalise by place recognition; else match the local map."""
        ok = False
        if self.place is not None:
            kf_id = relocalize(frame, self.map, self.place, self.K, self._optimize,
                               max_candidates=self.cfg.place.max_candidates,
                               min_inliers=self.cfg.relocalization.min_inliers)
            if kf_id is not None:
                self.ref_kf = self.map.keyframes[kf_id]
                self.local_kf_ids = [kf_id]
                ok = True
        if not ok:
            ok = self._recover_local(frame)
        if ok:
            self._recovered_at = frame.id
            self.relocalizations += 1
        return ok

    def _recover_local(self, frame: Frame) -> bool:
        ok = recover_from_local_map(frame, self.map, self.K, self.tcfg, self.local_kf_ids,
                                    self._optimize)
        if ok:
            log.info("frame %d: recovered against the local map", frame.id)
        return ok

    def _track_local_map(self, frame: Frame, image: NDArray[np.uint8]) -> bool:
        found = local_keyframes(self.map, frame.point_ids[frame.point_ids >= 0],
                                self.tcfg.local_map_keyframes)
        if found is not None:
            self.local_kf_ids, ref_id = found
            self.ref_kf = self.map.keyframes[ref_id]
        counting = not self.localization_only  # a localisation-only map stays as loaded
        search_local_points(
            frame, self.map, self.local_kf_ids, self.K, self.cfg, self.sensor,
            self.builder.scale_factors, counting=counting,
            recovered=frame.id - self._recovered_at < self.tcfg.recovered_frames)
        n = self._optimize(frame)
        if self.subpixel == "all" and n >= self.tcfg.min_tracked_points:
            with self.clock.stage("subpixel"):
                n = self._refine_and_optimize(frame, image, n)
        if counting:
            self.map.count_found(frame.point_ids[frame.point_ids >= 0])
        self.n_inliers = n
        return n >= self.tcfg.min_tracked_points

    # --------------------------------------------------------------- keyframes
    def _need_keyframe(self, frame: Frame) -> bool:
        """Whether ``frame`` becomes a keyframe: the policy's rules, then the revisit rule,
        then local mapping's state. Offline replays wait for it: monocular until it is
        idle (the next frames need the keyframe's points), stereo/RGB-D until fewer than
        ``keyframe_max_mapping_queue`` keyframes wait besides the one being mapped (their
        points come from depth, and mapping works through a backlog faster: no fusion or
        BA while keyframes wait; a BA that runs finishes).
        Live sources insert when it is idle, or, for stereo/RGB-D, when only a few wait."""
        if not self.keyframes.wanted(self._keyframe_evidence(frame)) or self._revisits(frame):
            return False
        if self.tcfg.wait_for_mapping:
            with self.clock.stage("wait_mapping"):
                if self.sensor == "mono":
                    self.mapping.wait_idle()
                else:  # at most max - 1 waiting besides the one being mapped, as live
                    self.mapping.wait_backlog(self.tcfg.keyframe_max_mapping_queue + 1)
            return True
        if self.mapping.is_idle():
            return True
        self.mapping.interrupt()
        return (self.sensor != "mono"
                and self.mapping.queue_depth() < self.tcfg.keyframe_max_mapping_queue)

    def _keyframe_evidence(self, frame: Frame) -> KeyframeEvidence:
        n_kfs = self.map.n_keyframes()
        # ORB-SLAM counts a stereo observation twice; we count keyframes.
        min_obs = (2 if n_kfs <= 2 else 3) if self.sensor == "mono" else (1 if n_kfs <= 2 else 2)
        assert self.ref_kf is not None
        obs_counts = self.map.observation_counts(self.ref_kf.id)
        tracked_close = untracked_close = 0
        if self.sensor != "mono":
            close = (frame.depth_m > 0) & (frame.depth_m < self.close_depth)
            tracked_close = int(np.count_nonzero(close & (frame.point_ids >= 0)))
            untracked_close = int(np.count_nonzero(close & (frame.point_ids < 0)))
        return KeyframeEvidence(
            frames_since=frame.id - self.last_kf_frame_id, n_keyframes=n_kfs,
            n_inliers=self.n_inliers, n_ref_tracked=int(np.count_nonzero(obs_counts >= min_obs)),
            n_ref_points=len(obs_counts), tracked_close=tracked_close,
            untracked_close=untracked_close,
            # Offline replays decide as if mapping kept up, and wait for it when it has not.
            mapping_idle=self.tcfg.wait_for_mapping or self.mapping.is_idle())

    def _revisits(self, frame: Frame) -> bool:
        """The revisit rule (:meth:`KeyframePolicy.revisits`) against every keyframe."""
        T = frame.T_cam_world
        if not self.keyframes.revisit_rule_on or T is None:
            return False
        pts = self.map.point_arrays(frame.point_ids[frame.point_ids >= 0])
        z = pts.xyz_world @ T[2, :3] + T[2, 3]
        with self.map.lock:
            poses = [kf.T_cam_world for kf in self.map.keyframes.values() if not kf.bad]
        depth = float(np.median(z[z > 0])) if np.any(z > 0) else 0.0
        return self.keyframes.revisits(T, np.array(poses).reshape(-1, 4, 4), depth)

    def _maybe_insert_keyframe(self, frame: Frame, image: NDArray[np.uint8]) -> bool:
        if self.localization_only or not self._need_keyframe(frame):
            return False
        if self.subpixel == "keyframes":  # the map keeps refined observations
            self.n_inliers = self._refine_and_optimize(frame, image, self.n_inliers)
        assert frame.T_cam_world is not None
        kf = KeyFrame(self.map.new_keyframe_id(), frame, frame.T_cam_world.copy())
        with self.map.lock:
            self.map.add_keyframe(kf)
            for i in np.flatnonzero(frame.point_ids >= 0):
                pid = int(frame.point_ids[i])
                if pid in self.map.points:
                    self.map.add_observation(pid, kf.id, int(i))
                else:
                    frame.point_ids[i] = -1
            if self.sensor != "mono":
                add_depth_points(self.map, kf, self.K, self.close_depth)
        self._register_keyframe(kf)
        self.mapping.submit(kf.id)
        return True

    def close(self) -> None:
        self.builder.close()

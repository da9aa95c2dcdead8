"""The loop-closing thread.

Local mapping hands over each keyframe it has finished. The loop closer describes
it for place recognition, looks for consistent loop candidates, verifies them
geometrically, corrects the map (local mapping paused, tracking running), starts a
global BA in the background, and finally adds the keyframe to the place database
(which relocalisation also queries). With detection off it only keeps the database.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager

import numpy as np

from slam.config import SlamConfig
from slam.events import LoopClosed
from slam.loop.correction import CorrectionParams, correct_loop
from slam.loop.detection import LoopDetector
from slam.loop.global_ba import GlobalBundleAdjuster
from slam.loop.verify import (
    LoopMatch,
    VerifyParams,
    confirmed_by_neighbours,
    verify_candidates,
)
from slam.map.keyframe import KeyFrame
from slam.map.map import Map
from slam.place.recognizer import PlaceDescriptor, PlaceRecognizer
from slam.stages import StageClock
from slam.worker import KeyframeWorker

log = logging.getLogger(__name__)


class LoopCloser(KeyframeWorker):
    """Loop detection and correction, in a thread of its own or inline."""

    QUEUE_SIZE = 64  # keyframes waiting for loop detection

    def __init__(
        self, cfg: SlamConfig, slam_map: Map, recognizer: PlaceRecognizer,
        K: np.ndarray, bf: float, fix_scale: bool,
        pause_mapping: Callable[[], AbstractContextManager[object]],
        on_corrected: Callable[[], None] = lambda: None,
        on_loop: Callable[[LoopClosed], None] = lambda event: None,
        *, detect: bool = True, threaded: bool = True,
    ) -> None:
        super().__init__("loop closing", self.QUEUE_SIZE, threaded)
        self.cfg = cfg.loop
        self.map = slam_map
        self.recognizer = recognizer
        self.detect_loops = detect and cfg.loop.enabled
        self.pause_mapping = pause_mapping
        self.on_corrected = on_corrected
        self.on_loop = on_loop
        self.detector = LoopDetector(slam_map, recognizer, cfg.loop.consistency,
                                     cfg.place.max_candidates)
        self.verify_params = VerifyParams(cfg.loop.min_matches, cfg.loop.min_inliers,
                                          cfg.loop.min_projected_matches, fix_scale)
        scale_factors = np.asarray(cfg.features.scale_factor ** np.arange(cfg.features.n_levels),
                                   np.float64)
        self.correction = CorrectionParams(K, bf, scale_factors, fix_scale,
                                           cfg.loop.essential_graph_min_weight,
                                           cfg.loop.pose_graph_iterations)
        self.global_ba = GlobalBundleAdjuster(slam_map, K, bf, cfg.loop.global_ba_iterations,
                                              pause_mapping, on_corrected)
        self.descriptors: dict[int, PlaceDescriptor] = {}
        self.events: list[LoopClosed] = []
        self.clock = StageClock("loop closing")
        self._forget: list[int] = []
        self._forget_lock = threading.Lock()
        self._last_loop_kf = -(10**9)
        self._rng = np.random.default_rng(0)
        self.start()

    # --- interface -------------------------------------------------------------
    def flush(self, timeout: float = 300.0) -> None:
        """Wait until queued keyframes are processed and a running global BA is done."""
        super().flush(timeout)
        self.global_ba.wait()
        self.raise_if_failed()
        self._drop_forgotten()  # idle now: nothing else touches the descriptors

    def stop(self) -> None:
        self.global_ba.abort()
        super().stop()

    def reset(self) -> None:
        """Forget everything (a new map was started)."""
        self.global_ba.abort()
        self.recognizer.clear()
        self.descriptors.clear()
        self.detector.reset()
        with self._forget_lock:
            self._forget.clear()

    def forget(self, kf_ids: list[int]) -> None:
        """Culled keyframes: dropped from place recognition before the next keyframe is
        processed (from any thread)."""
        if kf_ids:
            with self._forget_lock:
                self._forget.extend(kf_ids)

    def _drop_forgotten(self) -> None:
        with self._forget_lock:
            ids, self._forget = self._forget, []
        for kf_id in ids:
            self.descriptors.pop(kf_id, None)
            self.recognizer.erase(kf_id)

    # --- work -------------------------------------------------------------------
    def handle(self, kf_id: int) -> None:
        self.process(kf_id)

    def process(self, kf_id: int) -> None:
        """Describe, detect, verify and correct for one keyframe; then index it."""
        self._drop_forgotten()
        with self.map.lock:
            kf = self.map.keyframes.get(kf_id)
            if kf is None or kf.bad:
                return
            descriptors, pixels = kf.frame.descriptors, kf.frame.pixels()
        clock = self.clock
        with clock.stage("describe"):
            desc = self.recognizer.describe(descriptors, pixels)
        self.descriptors[kf_id] = desc
        if self.detect_loops and self._may_search(kf_id):
            with clock.stage("detect"):
                consistent, early = self.detector.detect(kf, desc, self.descriptors)
            lm = None
            with clock.stage("verify"):
                if consistent:
                    lm = verify_candidates(self.map, kf, consistent, self.correction.K,
                                           self.verify_params, self._rng)
                if lm is None and early:
                    lm = self._verify_early(kf, early[:3])
            if lm is not None:
                with clock.stage("correct"):
                    self._close(lm)
        with clock.stage("index"):
            self.recognizer.add(kf_id, desc)

    def _verify_early(self, kf: KeyFrame, early: list[tuple[int, int]]) -> LoopMatch | None:
        """A candidate supported by fewer consecutive keyframes than ``consistency``,
        accepted when the loop also shows in enough covisible neighbours of ``kf``."""
        support = dict(early)
        lm = verify_candidates(self.map, kf, list(support), self.correction.K,
                               self.verify_params, self._rng)
        log.debug("keyframe %d: early candidates %s -> %s", kf.id, early,
                  None if lm is None else lm.loop_kf_id)
        if lm is None:
            return None
        need = self.cfg.consistency - support[lm.loop_kf_id]
        if need <= 0 or confirmed_by_neighbours(self.map, lm, self.correction.K, need,
                                                self.cfg.min_projected_matches // 2):
            log.debug("loop %d -> %d confirmed by covisible keyframes", lm.cur_kf_id,
                      lm.loop_kf_id)
            return lm
        return None

    def _may_search(self, kf_id: int) -> bool:
        return (self.map.n_keyframes() > self.cfg.min_keyframes_between
                and kf_id >= self._last_loop_kf + self.cfg.min_keyframes_between)

    def _close(self, lm: LoopMatch) -> None:
        self.global_ba.abort()
        with self.pause_mapping():
            correct_loop(self.map, lm, self.correction)
            with self.map.lock:
                t_cur = self.map.keyframes[lm.cur_kf_id].timestamp
                t_loop = self.map.keyframes[lm.loop_kf_id].timestamp
        self._last_loop_kf = lm.cur_kf_id
        self.detector.reset()
        event = LoopClosed(lm.cur_kf_id, lm.loop_kf_id, t_cur, t_loop, lm.scale,
                           len(lm.matches))
        self.events.append(event)
        self.on_loop(event)  # the loop first, then the map changes it made
        self.on_corrected()
        if self.cfg.global_ba_iterations > 0:
            self.global_ba.start(threaded=self.threaded)

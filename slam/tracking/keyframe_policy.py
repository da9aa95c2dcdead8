"""When a tracked frame becomes a keyframe: ORB-SLAM's rules, named.

The tracker gathers :class:`KeyframeEvidence` (counts about the frame, its reference
keyframe and local mapping) and asks :class:`KeyframePolicy` whether a keyframe is
wanted. A keyframe is wanted when one of the *timing* rules holds (enough frames
passed, mapping idle, tracking weak) and one of the *need* rules holds (too few of
the reference keyframe's points tracked, unmapped close points, too little overlap)
and the frame's pose is trustworthy. Every threshold is a field of
:class:`slam.config.TrackingConfig` (``keyframe_*``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from slam.config import TrackingConfig


@dataclass(frozen=True)
class KeyframeEvidence:
    """What the decision looks at, for one tracked frame.

    ``frames_since``: frames since the last keyframe; ``n_keyframes`` in the map;
    ``n_inliers``: the frame's tracked map points; ``n_ref_tracked``: the reference
    keyframe's points observed by enough keyframes (ORB-SLAM's nRefMatches);
    ``n_ref_points``: all its live points; ``tracked_close``/``untracked_close``:
    the frame's keypoints with a close depth, matched or not (0 for monocular);
    ``mapping_idle``: local mapping has nothing queued (or replays act as if so).
    """

    frames_since: int
    n_keyframes: int
    n_inliers: int
    n_ref_tracked: int
    n_ref_points: int
    tracked_close: int
    untracked_close: int
    mapping_idle: bool


class KeyframePolicy:
    """The keyframe rules for one sensor (``mono`` has no depth rules)."""

    def __init__(self, cfg: TrackingConfig, sensor: str) -> None:
        self.cfg = cfg
        self.depth = sensor != "mono"
        self.track_ratio = cfg.keyframe_track_ratio if self.depth else cfg.keyframe_track_ratio_mono
        self.revisit_rule_on = cfg.keyframe_revisit_deg > 0

    # --- timing: is it time? -------------------------------------------------------
    def max_frames_passed(self, ev: KeyframeEvidence) -> bool:
        return ev.frames_since >= self.cfg.keyframe_max_frames

    def mapping_ready(self, ev: KeyframeEvidence) -> bool:
        return ev.frames_since >= self.cfg.keyframe_min_frames and ev.mapping_idle

    def tracking_weak(self, ev: KeyframeEvidence) -> bool:
        return self.depth and (ev.n_inliers < self.cfg.keyframe_weak_ratio * ev.n_ref_tracked
                               or self.close_points_unmapped(ev))

    # --- need: would a keyframe add something? -------------------------------------
    def few_reference_points(self, ev: KeyframeEvidence) -> bool:
        ratio = self.cfg.keyframe_track_ratio_start if ev.n_keyframes < 2 else self.track_ratio
        return ev.n_inliers < ratio * ev.n_ref_tracked

    def close_points_unmapped(self, ev: KeyframeEvidence) -> bool:
        return self.depth and (ev.tracked_close < self.cfg.keyframe_close_tracked_max
                               and ev.untracked_close > self.cfg.keyframe_close_untracked_min)

    def low_overlap(self, ev: KeyframeEvidence) -> bool:
        """Stereo/RGB-D points are born in one keyframe, so few are multiply observed when
        the camera turns fast and ORB-SLAM's rules alone leave keyframes too far apart
        (40 degrees on the synthetic loop): also one when fewer than
        ``keyframe_overlap_ratio`` of the reference's points are tracked."""
        share = self.cfg.keyframe_overlap_ratio
        return (self.depth and ev.n_keyframes >= 2 and share > 0
                and ev.n_inliers < share * ev.n_ref_points)

    def wanted(self, ev: KeyframeEvidence) -> bool:
        """Whether ``ev``'s frame should become a keyframe (mapping permitting)."""
        timing = self.max_frames_passed(ev) or self.mapping_ready(ev) or self.tracking_weak(ev)
        need = (self.few_reference_points(ev) or self.close_points_unmapped(ev)
                or self.low_overlap(ev))
        return timing and need and ev.n_inliers > self.cfg.keyframe_min_inliers

    # --- revisits: is the place mapped already? --------------------------------------
    def revisits(self, T_cam_world: NDArray[np.float64], keyframe_poses: NDArray[np.float64],
                 depth_m: float) -> bool:
        """Whether one of ``keyframe_poses`` (K, 4, 4) ``T_cam_world`` sees the frame's
        place from nearly its view: viewing direction within ``keyframe_revisit_deg``
        and centre within ``depth_m * tan(keyframe_revisit_deg)`` of the frame's (pose
        4x4; ``depth_m`` its median scene depth, metres). The place is mapped already and
        a new keyframe would only duplicate it (off when the angle is 0). A scale-free
        rule: a map's repeated passes disagree by centimetres, and what matters is the
        parallax they make, not the distance."""
        if not self.revisit_rule_on or len(keyframe_poses) == 0 or not depth_m > 0:
            return False
        R, t = T_cam_world[:3, :3], T_cam_world[:3, 3]
        R_kf, t_kf = keyframe_poses[:, :3, :3], keyframe_poses[:, :3, 3]
        centres = -np.einsum("nji,nj->ni", R_kf, t_kf)  # -R^T t of each keyframe
        dist = np.linalg.norm(centres - (-R.T @ t), axis=1)
        cos = (np.einsum("nij,ij->n", R_kf, R) - 1.0) / 2.0  # trace(R_kf R^T) = 1 + 2 cos
        angle = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
        max_dist = depth_m * np.tan(np.radians(self.cfg.keyframe_revisit_deg))
        return bool(np.any((dist <= max_dist) & (angle <= self.cfg.keyframe_revisit_deg)))

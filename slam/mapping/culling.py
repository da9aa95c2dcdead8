"""Map point and keyframe culling (ORB-SLAM's ``MapPointCulling``, ``KeyFrameCulling``)."""

from __future__ import annotations

import numpy as np

from slam.map.keyframe import KeyFrame
from slam.map.map import Map


def cull_recent_points(
    slam_map: Map, recent: list[int], current_kf_id: int, min_obs: int, found_ratio: float
) -> list[int]:
    """Erase recent points that are rarely matched or seen by too few keyframes.

    Points survive probation after 3 keyframes. Returns the list still on probation.
    """
    with slam_map.lock:
        st = slam_map.store
        ids, (visible, found, first, n_obs) = st.gather(
            np.array(recent, np.int64), ("n_visible", "n_found", "first_kf", "obs_n"))
        age = current_kf_id - first
        weak = (found / np.maximum(visible, 1) < found_ratio) | ((age >= 2) & (n_obs < min_obs))
        for pid in ids[weak].tolist():
            slam_map.erase_point(pid)
        return ids[~weak & (age < 3)].tolist()


def cull_keyframes(
    slam_map: Map, kf_id: int, redundant_ratio: float, max_close_depth: float | None
) -> list[int]:
    """Erase covisible keyframes whose points are mostly seen by >= 3 other keyframes
    at the same or a finer scale. Returns the erased ids."""
    erased: list[int] = []
    with slam_map.lock:
        kf = slam_map.keyframes.get(kf_id)
        if kf is None:
            return erased
        for nid in list(kf.ordered_covisible):
            nkf = slam_map.keyframes.get(nid)
            if nkf is None or nkf.bad or nid == slam_map.origin_kf_id:
                continue
            if _redundant(slam_map, nkf, max_close_depth, redundant_ratio):
                slam_map.erase_keyframe(nid)
                erased.append(nid)
    return erased


def _redundant(slam_map: Map, kf: KeyFrame, max_close_depth: float | None,
               redundant_ratio: float) -> bool:
    """Whether more than ``redundant_ratio`` of the keyframe's live points are seen by
    3 other keyframes at the keyframe's level or finer (one level of slack): the store
    counts each point's observations by level, so no observation is visited."""
    idx = np.flatnonzero(kf.point_ids >= 0)
    if max_close_depth is not None:
        # Stereo/RGB-D: far points do not count (points without depth do).
        d = kf.frame.depth_m[idx]
        idx = idx[(d < 0) | (d <= max_close_depth)]
    _, live, (by_level,) = slam_map.store.gather_mask(kf.point_ids[idx], ("obs_levels",))
    n_points = len(by_level)
    if n_points == 0:
        return False
    level = np.minimum(kf.frame.octave[idx[live]] + 1, by_level.shape[1] - 1)
    as_fine = np.cumsum(by_level, axis=1)[np.arange(n_points), level]
    # The keyframe's own observation is among them (its level is finer than level).
    n_redundant = int(np.count_nonzero(as_fine - 1 >= 3))
    return n_redundant > redundant_ratio * n_points

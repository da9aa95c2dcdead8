"""Map point and keyframe culling (ORB-SLAM's ``MapPointCulling``, ``KeyFrameCulling``)."""

from __future__ import annotations

import numpy as np

from slam.map.map import Map


def cull_recent_points(
    slam_map: Map, recent: list[int], current_kf_id: int, min_obs: int, found_ratio: float
) -> list[int]:
    """Erase recent points that are rarely matched or seen by too few keyframes.

    Points survive probation after 3 keyframes. Returns the list still on probation.
    """
    still: list[int] = []
    with slam_map.lock:
        for pid in recent:
            mp = slam_map.points.get(pid)
            if mp is None or mp.bad:
                continue
            age = current_kf_id - mp.first_kf_id
            if mp.found_ratio < found_ratio or (age >= 2 and len(mp.observations) < min_obs):
                slam_map.erase_point(pid)
            elif age < 3:
                still.append(pid)
    return still


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
        octaves: dict[int, list[int]] = {}  # keyframe id -> octave of each keypoint

        def octaves_of(k: int) -> list[int] | None:
            o = octaves.get(k)
            if o is None:
                okf = slam_map.keyframes.get(k)
                if okf is None:
                    return None
                o = octaves[k] = okf.frame.octave.tolist()
            return o

        for nid in list(kf.ordered_covisible):
            nkf = slam_map.keyframes.get(nid)
            if nkf is None or nkf.bad or nid == slam_map.origin_kf_id:
                continue
            idx = np.flatnonzero(nkf.point_ids >= 0)
            if max_close_depth is not None:
                # Stereo/RGB-D: far points do not count (points without depth do).
                d = nkf.frame.depth_m[idx]
                idx = idx[(d < 0) | (d <= max_close_depth)]
            own = octaves_of(nid)
            assert own is not None
            # Live points count; only those seen by more than 3 keyframes can be seen by
            # 3 others at a fine enough scale (the store's counts spare the Python loop).
            pids = nkf.point_ids[idx]
            _, live, (n_obs,) = slam_map.store.gather_mask(pids, ("n_obs",))
            n_points, n_redundant = int(np.count_nonzero(live)), 0
            many = np.flatnonzero(live)[n_obs > 3]
            for i, pid in zip(idx[many].tolist(), pids[many].tolist()):
                mp = slam_map.points[pid]
                level = own[i] + 1
                seen = 0
                for okid, oi in mp.observations.items():
                    if okid == nid:
                        continue
                    o = octaves_of(okid)
                    if o is not None and o[oi] <= level:
                        seen += 1
                        if seen >= 3:
                            n_redundant += 1
                            break
            if n_points > 0 and n_redundant > redundant_ratio * n_points:
                slam_map.erase_keyframe(nid)
                erased.append(nid)
    return erased

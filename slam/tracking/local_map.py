"""A tracked frame's local map: the keyframes around it (ORB-SLAM's
``UpdateLocalKeyFrames``) and the search for their points in the frame
(``SearchLocalPoints``)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from slam.config import Sensor, SlamConfig
from slam.map.frame import Frame
from slam.map.map import Map
from slam.map.observations import most_common, tally
from slam.tracking.projection import match_projected, project_into

NEIGHBOURS_PER_LOCAL_KEYFRAME = 10  # covisible keyframes each adds (ORB-SLAM: 10)


def local_keyframes(slam_map: Map, point_ids: NDArray[np.int64], limit: int
                    ) -> tuple[list[int], int] | None:
    """The keyframes seeing the frame's matched points ``point_ids`` (M,), most shared
    first (at most ``limit``), then their best covisible neighbours (up to
    ``3 * limit`` in all); and the one sharing most (the new reference keyframe).
    None when no keyframe sees any of the points."""
    with slam_map.lock:
        _, obs_kf, _ = slam_map.store.observations(point_ids)
        seen_by, counts = tally(obs_kf)
        if len(seen_by) == 0:
            return None
        ranked = most_common(seen_by, counts).tolist()
        local = ranked[:limit]
        seen = set(local)
        for k in list(local):
            kf = slam_map.keyframes.get(k)
            if kf is None or kf.bad:
                continue
            for nb in kf.best_covisible(NEIGHBOURS_PER_LOCAL_KEYFRAME):
                if len(seen) >= 3 * limit:
                    break
                if nb not in seen and not slam_map.keyframes[nb].bad:
                    seen.add(nb)
                    local.append(nb)
    return local, ranked[0]


def search_local_points(frame: Frame, slam_map: Map, local: list[int],
                        K: NDArray[np.float64], cfg: SlamConfig, sensor: Sensor,
                        scale_factors: NDArray[np.float64], *, recovered: bool,
                        counting: bool) -> None:
    """Match the points of the ``local`` keyframes that the frame has not matched yet
    and that project into it (inside their scale range, seen from near their mean
    view) to its keypoints: ``frame.point_ids`` gets them. ``K`` (3, 3);
    ``scale_factors`` (levels,); ``recovered``: the frame follows a relocalisation
    closely (a wider search); ``counting``: the frame's matches and the points that
    project count as visible once more (not for a localisation-only map)."""
    assert frame.T_cam_world is not None
    matched = frame.point_ids[frame.point_ids >= 0]
    if counting:
        slam_map.count_visible(matched)
    pts = slam_map.point_arrays(slam_map.point_ids_of(local, exclude=matched))
    if not len(pts):
        return
    proj = project_into(frame, frame.T_cam_world, K, pts.xyz_world, pts.normals,
                        pts.min_dist, pts.max_dist, cfg.features.scale_factor,
                        cfg.features.n_levels)
    t = cfg.tracking
    th = t.local_search_radius_rgbd_px if sensor == "rgbd" else t.local_search_radius_px
    if recovered:
        th = t.local_search_radius_recovered_px
    # Head-on views (within ~3.6 degrees of the point's mean view) search closer.
    r = np.where(proj.view_cos > 0.998, 2.5, 4.0) * th
    sel, kp = match_projected(frame, proj, pts.descriptors, r * scale_factors[proj.level],
                              th_high=t.hamming_threshold_high, ratio=t.match_ratio)
    frame.point_ids[kp] = pts.ids[sel]
    if counting:
        slam_map.count_visible(pts.ids[proj.keep])

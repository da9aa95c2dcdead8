"""Relocalisation: place recognition, then PnP-RANSAC against each candidate.

The lost frame is described for place recognition; for each candidate keyframe its
map points are matched to the frame by descriptor, a pose is found by PnP-RANSAC
and refined, the candidate's covisible neighbourhood is projected to gather more
matches, and the pose is accepted with enough inliers (ORB-SLAM's relocalisation).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from slam.config import TrackingConfig
from slam.features.matching import match_ratio, search_by_projection
from slam.geometry.pnp import solve_pnp_ransac
from slam.map.frame import Frame
from slam.map.map import Map
from slam.place.recognizer import PlaceRecognizer
from slam.tracking.projection import project_into

log = logging.getLogger(__name__)


def _candidate_matches(
    slam_map: Map, kf_id: int, frame: Frame
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]] | None:
    """(frame keypoint indices, map point ids, their positions (M, 3)) matched from
    keyframe ``kf_id``."""
    with slam_map.lock:
        kf = slam_map.keyframes.get(kf_id)
        if kf is None or kf.bad:
            return None
        kp = np.flatnonzero(kf.point_ids >= 0)
        pids = kf.point_ids[kp].copy()
        alive = slam_map.store.alive_mask(pids)
        kp, pids = kp[alive], pids[alive]
        desc = kf.frame.descriptors[kp]
        xyz = slam_map.store.get("xyz", pids)
    i1, i2 = match_ratio(desc, frame.descriptors, ratio=0.75, th=64)
    return i2, pids[i1], xyz[i1]


def _project_neighbourhood(
    slam_map: Map, kf_id: int, frame: Frame, K: NDArray[np.float64],
) -> int:
    """Add matches of the candidate's covisible points at the frame's pose."""
    assert frame.T_cam_world is not None
    with slam_map.lock:
        kf = slam_map.keyframes[kf_id]
        group = [kf_id] + [k for k in kf.best_covisible(10) if not slam_map.keyframes[k].bad]
        pids = slam_map.point_ids_of(group)
    pids = np.setdiff1d(pids, frame.point_ids[frame.point_ids >= 0])
    pts = slam_map.point_arrays(pids)
    if len(pts) == 0:
        return 0
    proj = project_into(frame, frame.T_cam_world, K, pts.xyz_world, pts.normals, pts.min_dist,
                        pts.max_dist, slam_map.scale_factor, slam_map.n_levels)
    if len(proj.keep) == 0:
        return 0
    radius = np.asarray(10.0 * slam_map.scale_factor ** proj.level, np.float64)
    idx, _ = search_by_projection(proj.uv, proj.level, radius, pts.descriptors[proj.keep],
                                  frame.grid, frame.uv, frame.octave, frame.descriptors,
                                  frame.point_ids < 0, th_high=100, ratio=0.9, level_window=1)
    hit = np.flatnonzero(idx >= 0)
    frame.point_ids[idx[hit]] = pts.ids[proj.keep[hit]]
    return len(hit)


def relocalize(
    frame: Frame, slam_map: Map, recognizer: PlaceRecognizer, K: NDArray[np.float64],
    optimize: Callable[[Frame], int], *, max_candidates: int = 10, min_inliers: int = 30,
) -> int | None:
    """Pose ``frame`` against the map; returns the keyframe id it relocalised on.

    ``optimize`` is the tracker's pose-only optimisation (drops outliers, returns
    the number of inliers). On failure the frame's matches are cleared.
    """
    desc = recognizer.describe(frame.descriptors, frame.pixels())
    for kf_id, score in recognizer.query(desc, max_candidates):
        found = _candidate_matches(slam_map, kf_id, frame)
        if found is None or len(found[0]) < 15:
            continue
        kp, pids, xyz = found
        res = solve_pnp_ransac(xyz, frame.uv[kp], K)
        if res is None or int(res.inliers.sum()) < 10:
            continue
        frame.point_ids[:] = -1
        frame.point_ids[kp[res.inliers]] = pids[res.inliers]
        frame.T_cam_world = res.T_cam_world
        n = optimize(frame)
        if 10 <= n < 2 * min_inliers:
            _project_neighbourhood(slam_map, kf_id, frame, K)
            n = optimize(frame)
        if n >= min_inliers:
            log.info("frame %d relocalised on keyframe %d (score %.3f, %d inliers)",
                     frame.id, kf_id, score, n)
            return kf_id
        frame.point_ids[:] = -1
    return None


def recover_from_local_map(
    frame: Frame, slam_map: Map, K: NDArray[np.float64], cfg: TrackingConfig,
    local_kf_ids: list[int], optimize: Callable[[Frame], int],
) -> bool:
    """Pose ``frame`` against the points of the local map and of the latest
    ``cfg.recovery_keyframes`` keyframes: descriptor matches, PnP-RANSAC, then the
    tracker's pose-only optimisation; each step needs ``cfg.recovery_min_points``."""
    recent = [kf.id for kf in slam_map.good_keyframes()][-cfg.recovery_keyframes:]
    pts = slam_map.point_arrays(slam_map.points_of(set(local_kf_ids) | set(recent)))
    need = cfg.recovery_min_points
    if len(pts) < need:
        return False
    i1, i2 = match_ratio(pts.descriptors, frame.descriptors, ratio=cfg.recovery_match_ratio,
                         th=cfg.hamming_threshold_high)
    if len(i1) < need:
        return False
    res = solve_pnp_ransac(pts.xyz_world[i1], frame.uv[i2], K)
    if res is None or int(res.inliers.sum()) < need:
        return False
    frame.point_ids[:] = -1
    good = res.inliers
    frame.point_ids[i2[good]] = pts.ids[i1[good]]
    frame.T_cam_world = res.T_cam_world
    return optimize(frame) >= need

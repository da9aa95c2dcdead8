"""Monocular map initialisation: full BA of the two first keyframes, then scale to
a median scene depth of 1 (ORB-SLAM's ``CreateInitialMapMonocular``)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from slam.map.map import Map
from slam.mapping.bundle import build_local_problem, run_local_ba


def initial_bundle_adjustment(
    slam_map: Map, kf_ids: list[int], K: NDArray[np.float64], iterations: int = 20
) -> None:
    """Optimise the initial two-keyframe map (first keyframe fixed) and normalise scale."""
    lp = build_local_problem(slam_map, kf_ids[-1], K, 0.0, max_local=len(kf_ids))
    if lp is not None:
        run_local_ba(slam_map, lp, np.zeros(1, np.int32), iterations)
    with slam_map.lock:
        first = slam_map.keyframes[kf_ids[0]]
        pids = [int(p) for p in first.point_ids[first.point_ids >= 0] if int(p) in slam_map.points]
        if not pids:
            return
        xyz = np.array([slam_map.points[p].xyz_world for p in pids])
        z = xyz @ first.T_cam_world[2, :3] + first.T_cam_world[2, 3]
        median = float(np.median(z))
        if median <= 0:
            return
        s = 1.0 / median
        for k in kf_ids[1:]:
            kf = slam_map.keyframes[k]
            kf.T_cam_world = kf.T_cam_world.copy()
            kf.T_cam_world[:3, 3] *= s
            kf.frame.T_cam_world = kf.T_cam_world.copy()
        for mp in slam_map.points.values():
            mp.xyz_world = mp.xyz_world * s
        slam_map.update_normals_and_depths(list(slam_map.points))

"""New map points from pairs of keyframes (ORB-SLAM's ``CreateNewMapPoints``)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from slam.features.matching import match_epipolar
from slam.geometry.lie import hat, se3_inv
from slam.geometry.triangulation import triangulate_points
from slam.map.keyframe import KeyFrame
from slam.map.map import Map


def fundamental_21(kf1: KeyFrame, kf2: KeyFrame, K: NDArray[np.float64]) -> NDArray[np.float64]:
    """F (3x3) with ``uv2^T F uv1 = 0`` from the two keyframes' poses."""
    T21 = kf2.T_cam_world @ se3_inv(kf1.T_cam_world)
    E = hat(T21[:3, 3]) @ T21[:3, :3]
    K_inv = np.linalg.inv(K)
    return K_inv.T @ E @ K_inv


def _median_depth(kf: KeyFrame, slam_map: Map) -> float:
    _, (xyz,) = slam_map.store.gather(kf.point_ids[kf.point_ids >= 0], ("xyz",))
    if len(xyz) == 0:
        return 1.0
    z = xyz @ kf.T_cam_world[2, :3] + kf.T_cam_world[2, 3]
    return float(np.median(z))


def triangulate_with(
    slam_map: Map, kf1: KeyFrame, kf2: KeyFrame, K: NDArray[np.float64],
    level_sigma2: NDArray[np.float64], scale_factors: NDArray[np.float64], mono: bool,
    stereo_baseline: float,
) -> list[int]:
    """Match unmatched keypoints of two keyframes along epipolar lines and create
    the points that triangulate well. Returns the ids of the points created."""
    with slam_map.lock:
        if kf1.bad or kf2.bad:
            return []
        T1, T2 = kf1.T_cam_world.copy(), kf2.T_cam_world.copy()
        free1 = kf1.point_ids < 0
        free2 = kf2.point_ids < 0
        baseline = float(np.linalg.norm(kf1.center_world - kf2.center_world))
        if mono:
            if baseline / max(_median_depth(kf2, slam_map), 1e-9) < 0.01:
                return []
        elif baseline < stereo_baseline:
            return []
    f1, f2 = kf1.frame, kf2.frame
    F21 = fundamental_21(kf1, kf2, K)
    m = match_epipolar(f1.descriptors, f2.descriptors, f1.uv, f2.uv, f1.octave, f2.octave,
                       F21, free1, free2, level_sigma2)
    i1 = np.flatnonzero(m >= 0)
    i2 = m[i1]
    if len(i1) == 0:
        return []
    s1 = scale_factors[f1.octave[i1]]
    s2 = scale_factors[f2.octave[i2]]
    xyz, valid = triangulate_points(T1, T2, K, f1.uv[i1], f2.uv[i2], sigma1=s1, sigma2=s2,
                                    min_parallax_deg=0.5 if not mono else 0.6)
    # Scale consistency: distance ratio must agree with the octave ratio.
    c1 = -T1[:3, :3].T @ T1[:3, 3]
    c2 = -T2[:3, :3].T @ T2[:3, 3]
    with np.errstate(invalid="ignore", divide="ignore"):
        d1 = np.linalg.norm(xyz - c1, axis=1)
        d2 = np.linalg.norm(xyz - c2, axis=1)
        ratio_dist = d2 / d1
        ratio_oct = s1 / s2
        valid &= (ratio_dist * 1.5 * 1.2 > ratio_oct) & (ratio_dist < ratio_oct * 1.5 * 1.2)
    with slam_map.lock:
        if kf1.bad or kf2.bad:
            return []
        a, b, p = i1[valid], i2[valid], xyz[valid]
        free = (kf1.point_ids[a] < 0) & (kf2.point_ids[b] < 0)  # still free (distinct a, b)
        made = slam_map.add_points(p[free], kf1, a[free]).tolist()
        for pid, kp in zip(made, b[free].tolist()):
            slam_map.add_observation(pid, kf2.id, kp)
        slam_map.update_normals_and_depths(made)
    return made

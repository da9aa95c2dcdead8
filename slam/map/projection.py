"""Map points seen from a pose: which fall in a frame's view, where, and at what level.

Tracking (motion model, local map, relocalisation), local mapping (fusion) and loop
closing (verification) all project map points into a frame before matching them, so the
test lives here with the map, below all three.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from slam.map.frame import Frame
from slam.map.map_point import predict_levels

MIN_DEPTH_M = 1e-6
"""Points closer than this in front of the camera (metres) are behind it for projection."""
NEAR_SLACK = 0.8
"""A point is looked for from ``NEAR_SLACK * min_dist`` (its scale-invariance range, a
little wider: ORB-SLAM's 0.8)."""
FAR_SLACK = 1.2
"""... up to ``FAR_SLACK * max_dist`` (ORB-SLAM's 1.2)."""
MIN_VIEW_COS = 0.5
"""Cosine of the largest angle (60 degrees) between the viewing ray and the point's mean
viewing direction (ORB-SLAM's 0.5): beyond it the patch looks too different."""


@dataclass
class ProjectedPoints:
    """Map points (M, ...) that fall in a frame's view: ``keep`` (K,) indexes the input,
    ``uv`` (K, 2) their pixels, ``level`` (K,) predicted pyramid levels, ``view_cos`` (K,)
    cosine between the viewing ray and the point's normal (1 without normals)."""

    keep: NDArray[np.int64]
    uv: NDArray[np.float64]
    level: NDArray[np.int32]
    view_cos: NDArray[np.float64]


def project_into(
    frame: Frame,
    T_cam_world: NDArray[np.float64],
    K: NDArray[np.float64],
    xyz_world: NDArray[np.float64],
    normals: NDArray[np.float64] | None,
    dmin: NDArray[np.float64] | None,
    dmax: NDArray[np.float64] | None,
    scale_factor: float,
    n_levels: int,
) -> ProjectedPoints:
    """The points ``xyz_world`` (M, 3) that the camera at ``T_cam_world`` (4, 4) with
    intrinsics ``K`` (3, 3) sees: in front of it, inside ``frame``'s image, within their
    scale range ``dmin``/``dmax`` (M,) metres (when given; the predicted level then
    follows the ORB pyramid ``scale_factor``/``n_levels``) and seen from less than 60
    degrees off their mean viewing direction ``normals`` (M, 3) (when given)."""
    R, t = T_cam_world[:3, :3], T_cam_world[:3, 3]
    xyz_cam = xyz_world @ R.T + t
    z = xyz_cam[:, 2]
    ok = z > MIN_DEPTH_M
    inv_z = np.where(ok, 1.0 / np.where(ok, z, 1.0), 0.0)
    u = K[0, 0] * xyz_cam[:, 0] * inv_z + K[0, 2]
    v = K[1, 1] * xyz_cam[:, 1] * inv_z + K[1, 2]
    ok &= (u >= 0) & (u < frame.width) & (v >= 0) & (v < frame.height)
    center = -R.T @ t
    ray = xyz_world - center
    dist = np.linalg.norm(ray, axis=1)
    level = np.zeros(len(xyz_world), np.int32)
    view_cos = np.ones(len(xyz_world))
    if dmin is not None and dmax is not None:
        ok &= (dist >= NEAR_SLACK * dmin) & (dist <= FAR_SLACK * dmax)
        level = predict_levels(dist, dmax, scale_factor, n_levels)
    if normals is not None:
        view_cos = np.einsum("ij,ij->i", ray, normals) / np.maximum(dist, 1e-9)
        ok &= view_cos >= MIN_VIEW_COS
    keep = np.flatnonzero(ok)
    return ProjectedPoints(keep, np.stack([u[keep], v[keep]], 1), level[keep], view_cos[keep])

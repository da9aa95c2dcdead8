"""Project map points into a frame and match them to its keypoints."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from slam.features.matching import search_by_projection
from slam.map.frame import Frame
from slam.map.map_point import predict_levels


@dataclass
class ProjectedPoints:
    """Map points (M, ...) that fall in a frame's view: ``keep`` indexes the input."""

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
    """Points in front of the camera, inside the image, within their scale range
    and seen from less than 60 degrees off their mean viewing direction."""
    R, t = T_cam_world[:3, :3], T_cam_world[:3, 3]
    xyz_cam = xyz_world @ R.T + t
    z = xyz_cam[:, 2]
    ok = z > 1e-6
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
        ok &= (dist >= 0.8 * dmin) & (dist <= 1.2 * dmax)
        level = predict_levels(dist, dmax, scale_factor, n_levels)
    if normals is not None:
        view_cos = np.einsum("ij,ij->i", ray, normals) / np.maximum(dist, 1e-9)
        ok &= view_cos >= 0.5
    keep = np.flatnonzero(ok)
    return ProjectedPoints(keep, np.stack([u[keep], v[keep]], 1), level[keep], view_cos[keep])


def match_projected(
    frame: Frame,
    proj: ProjectedPoints,
    desc: NDArray[np.uint8],
    radius_px: NDArray[np.float64],
    th_high: int,
    ratio: float,
    level_window: int = 1,
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Match projected points to the frame's free keypoints.

    ``desc`` (M, 32) are the descriptors of *all* input points (indexed by
    ``proj.keep``). Returns ``(input_idx, kp_idx)`` of the accepted matches.
    """
    free = frame.point_ids < 0
    idx, _ = search_by_projection(
        proj.uv, proj.level, radius_px, desc[proj.keep], frame.grid, frame.uv, frame.octave,
        frame.descriptors, free, th_high=th_high, ratio=ratio, level_window=level_window,
    )
    hit = idx >= 0
    return proj.keep[hit], idx[hit]

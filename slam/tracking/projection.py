"""Match map points projected into a frame to its keypoints.

The projection itself (:func:`project_into`) lives in :mod:`slam.map.projection`, where
local mapping and loop closing use it too; it is re-exported here for tracking.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from slam.features.matching import search_by_projection
from slam.map.frame import Frame
from slam.map.projection import ProjectedPoints, project_into

__all__ = ["ProjectedPoints", "match_projected", "project_into"]


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

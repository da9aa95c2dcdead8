"""Read-only views the map hands out: arrays of points, and points as their reference
keyframes saw them (copies taken under the map lock)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from slam.map.frame import Frame


@dataclass
class PointArrays:
    """A snapshot of map points: ``ids`` (M,), ``xyz_world`` (M, 3) metres,
    ``descriptors`` (M, 32) uint8, ``normals`` (M, 3), ``min_dist``/``max_dist`` (M,) metres;
    ``found`` (N,) bool: which of the N ids asked for are among them (in the order asked)."""

    ids: NDArray[np.int64]
    xyz_world: NDArray[np.float64]
    descriptors: NDArray[np.uint8]
    normals: NDArray[np.float64]
    min_dist: NDArray[np.float64]
    max_dist: NDArray[np.float64]
    found: NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, bool))

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class ReferenceObservations:
    """Map points as their reference keyframes saw them. Per point (M,): ``rows`` its
    position in the query, ``kf_index`` its keyframe in ``kf_ids``, ``uv`` (M, 2) ideal
    pixels there, ``xyz_world`` (M, 3) metres. Per keyframe (G,): ``kf_ids``,
    ``T_cam_world`` (G, 4, 4) and ``frames`` (for their pixels)."""

    rows: NDArray[np.int64]
    kf_index: NDArray[np.int64]
    uv: NDArray[np.float64]
    xyz_world: NDArray[np.float64]
    kf_ids: list[int]
    T_cam_world: NDArray[np.float64]
    frames: list[Frame]

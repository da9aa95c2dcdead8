"""Map points: a 3-D position, a representative descriptor and its observations."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray


@dataclass
class MapPoint:
    """A landmark. ``xyz_world`` (3,) metres; ``descriptor`` (32,) uint8;
    ``observations`` maps keyframe id -> keypoint index in that keyframe;
    ``normal`` (3,) mean viewing direction (unit); ``min_dist``/``max_dist`` the
    scale-invariance range (metres) of distances from which it can be matched."""

    id: int
    xyz_world: NDArray[np.float64]
    descriptor: NDArray[np.uint8]
    ref_kf_id: int
    first_kf_id: int
    observations: dict[int, int] = field(default_factory=dict)
    normal: NDArray[np.float64] = field(default_factory=lambda: np.zeros(3))
    min_dist: float = 0.0
    max_dist: float = 0.0
    n_visible: int = 1
    n_found: int = 1
    bad: bool = False
    replaced_by: int = -1

    @property
    def found_ratio(self) -> float:
        """Share of the frames that should have seen it where it was matched."""
        return self.n_found / max(self.n_visible, 1)

    def predict_level(self, dist: float, scale_factor: float, n_levels: int) -> int:
        """Pyramid level at which a camera ``dist`` metres away should see it."""
        if dist <= 0 or self.max_dist <= 0:
            return 0
        level = int(math.ceil(math.log(self.max_dist / dist) / math.log(scale_factor)))
        return min(max(level, 0), n_levels - 1)

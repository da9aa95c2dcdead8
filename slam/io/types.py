"""Data that sources yield and trajectories that files hold."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from slam.errors import EvaluationError


@dataclass
class SensorFrame:
    """One frame from a source.

    ``image``: (H, W) uint8 grey, the left/colour image (colour sources are
    converted to grey by the source; ``color`` keeps the (H, W, 3) BGR image when
    there is one). ``right``: (H, W) uint8 rectified right image for stereo.
    ``depth_m``: (H, W) float32 depth in metres registered to ``image``, 0 or NaN
    where there is no reading. ``timestamp`` in seconds.
    """

    index: int
    timestamp: float
    image: NDArray[np.uint8]
    right: NDArray[np.uint8] | None = None
    depth_m: NDArray[np.float32] | None = None
    color: NDArray[np.uint8] | None = None


@dataclass
class Trajectory:
    """Timestamped world-from-camera poses: ``stamps`` (N,) seconds, ``T_world_cam`` (N, 4, 4)."""

    stamps: NDArray[np.float64]
    T_world_cam: NDArray[np.float64]

    def __post_init__(self) -> None:
        self.stamps = np.asarray(self.stamps, dtype=np.float64).reshape(-1)
        self.T_world_cam = np.asarray(self.T_world_cam, dtype=np.float64).reshape(-1, 4, 4)
        if len(self.stamps) != len(self.T_world_cam):
            raise EvaluationError(
                f"trajectory has {len(self.stamps)} stamps but {len(self.T_world_cam)} poses"
            )

    def __len__(self) -> int:
        return len(self.stamps)

    @property
    def positions(self) -> NDArray[np.float64]:
        """Camera centres (N, 3) in the world frame, metres."""
        return self.T_world_cam[:, :3, 3]

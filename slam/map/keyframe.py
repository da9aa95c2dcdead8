"""Keyframes: frames kept in the map, with their covisibility links."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from slam.geometry.lie import se3_inv
from slam.map.frame import Frame


@dataclass
class KeyFrame:
    """A frame kept in the map.

    ``frame`` holds the features (its ``point_ids`` are the keyframe's
    associations); ``T_cam_world`` (4x4) is the optimised pose; ``covisible``
    maps neighbour keyframe id -> number of shared map points (>= 15, or the best
    one); ``parent_id`` / ``children`` form the spanning tree; ``loop_edges`` the
    keyframes a loop closure linked it to (such keyframes are never culled).
    """

    id: int
    frame: Frame
    T_cam_world: NDArray[np.float64]
    covisible: dict[int, int] = field(default_factory=dict)
    ordered_covisible: list[int] = field(default_factory=list)
    parent_id: int = -1
    children: set[int] = field(default_factory=set)
    bad: bool = False
    T_cam_parent: NDArray[np.float64] | None = None
    loop_edges: set[int] = field(default_factory=set)

    @property
    def timestamp(self) -> float:
        return self.frame.timestamp

    @property
    def point_ids(self) -> NDArray[np.int64]:
        """Map point id per keypoint (N,), -1 where none."""
        return self.frame.point_ids

    @property
    def center_world(self) -> NDArray[np.float64]:
        """Camera centre (3,) in the world frame."""
        return -self.T_cam_world[:3, :3].T @ self.T_cam_world[:3, 3]

    @property
    def T_world_cam(self) -> NDArray[np.float64]:
        """World-from-camera pose (4x4)."""
        return se3_inv(self.T_cam_world)

    def best_covisible(self, n: int) -> list[int]:
        """Up to ``n`` neighbour ids, most shared points first."""
        return self.ordered_covisible[:n]

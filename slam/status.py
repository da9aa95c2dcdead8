"""What the SLAM system reports when asked: its status and a snapshot of its map.

Plain data (numpy arrays and numbers), so that callers such as the service never
read the map, the threads or their queues themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from slam.events import KeyframeInfo, LoopClosed
from slam.io.types import Trajectory


@dataclass(frozen=True)
class SystemStatus:
    """Counts of the system now: keyframes and map points of the live map, loops
    closed, relocalisations, maps started, keyframes waiting for local mapping and for
    loop detection, poses that left the bounded trajectory, and the median time (ms)
    of local mapping's bundle adjustment and of its whole keyframe step (0 before
    the first; the newest keyframes only)."""

    keyframes: int
    map_points: int
    loops_closed: int
    relocalisations: int
    maps: int
    mapping_queue: int
    loop_queue: int
    poses_dropped: int
    local_ba_ms_median: float = 0.0
    keyframe_ms_median: float = 0.0


@dataclass(frozen=True)
class SystemSnapshot:
    """The map now: good keyframes (by id), points (``point_ids`` (N,), ``point_xyz``
    (N, 3) metres, ``point_rgb`` (N, 3) uint8; empty unless asked for), the trajectory
    (every tracked frame, corrected) and the loops closed."""

    keyframes: tuple[KeyframeInfo, ...]
    trajectory: Trajectory
    loops: tuple[LoopClosed, ...]
    point_ids: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    point_xyz: NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 3)))
    point_rgb: NDArray[np.uint8] = field(default_factory=lambda: np.zeros((0, 3), np.uint8))

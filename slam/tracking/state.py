"""Tracking states and per-frame results."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np
from numpy.typing import NDArray


class TrackState(Enum):
    """The tracker's state machine."""

    INITIALIZING = "initializing"
    TRACKING = "tracking"
    LOST = "lost"


@dataclass
class TrackResult:
    """What tracking says about one frame. ``T_world_cam`` (4x4) is None when not tracked;
    ``uv_tracked`` (K, 2): ideal pixels of the keypoints matched to map points (inliers),
    empty when not tracked; ``relocalized``: tracking was lost and this frame found its
    pose again (place recognition or the local map)."""

    frame_id: int
    timestamp: float
    state: TrackState
    T_world_cam: NDArray[np.float64] | None
    n_inliers: int
    is_keyframe: bool
    track_ms: float
    uv_tracked: NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 2)))
    relocalized: bool = False

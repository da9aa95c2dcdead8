"""Smooth camera trajectories inside :func:`slam.synthetic.scene.room_scene`.

Poses are ``T_world_cam`` (world-from-camera) in the room's world frame (z up); the
camera optical frame is x right, y down, z forward. Timestamps are ``t0 + k / fps``.
Per-frame motion stays within a few centimetres and about two degrees at 30 Hz.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from slam.errors import ConfigError
from slam.geometry.lie import make_pose, so3_exp
from slam.io.types import Trajectory

Array = NDArray[np.float64]
Vec3 = tuple[float, float, float] | Array
_UP = np.array([0.0, 0.0, 1.0])
ROOM_CENTRE: tuple[float, float, float] = (4.0, 3.0, 1.5)


def camera_rotation(yaw: float, pitch: float = 0.0, roll: float = 0.0) -> Array:
    """R_world_cam (3, 3) of a camera looking along heading ``yaw`` (radians, about z,
    0 = +x), tilted up by ``pitch`` and rolled by ``roll`` about its optical axis."""
    fwd = np.array([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)])
    right = np.cross(fwd, _UP)
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    R = np.stack([right, down, fwd], axis=1)
    return np.asarray(R @ so3_exp(np.array([0.0, 0.0, roll])), dtype=np.float64)


def _trajectory(positions: Array, yaw: Array, pitch: Array, roll: Array, fps: float,
                t0: float) -> Trajectory:
    n = len(positions)
    poses = np.stack([make_pose(camera_rotation(yaw[k], pitch[k], roll[k]), positions[k])
                      for k in range(n)])
    return Trajectory(t0 + np.arange(n) / fps, poses)


def _check(n_frames: int, fps: float) -> None:
    if n_frames < 2:
        raise ConfigError(f"a trajectory needs at least 2 frames, got {n_frames}")
    if not fps > 0:
        raise ConfigError(f"invalid frame rate {fps}")


def loop_trajectory(n_frames: int = 300, radius: float = 1.0, centre: Vec3 = ROOM_CENTRE,
                    fps: float = 30.0, t0: float = 0.0, laps: float = 1.0) -> Trajectory:
    """Closed horizontal circle of ``radius`` m around ``centre``, camera looking outwards
    at the walls with a yaw sway of ~17 deg, some pitch, roll and height change.

    The ``n_frames`` frames go ``laps`` times round: with one lap, frame ``n_frames``
    would coincide with frame 0, so the sequence closes a loop; more than one lap
    revisits the start (for loop closing). With 300 frames per lap a step is ~2 cm and
    at most ~2 deg; fewer frames per lap mean proportionally larger steps.
    """
    _check(n_frames, fps)
    if not 0 < laps <= 10:
        raise ConfigError(f"laps must be in (0, 10], got {laps}")
    theta = 2.0 * np.pi * laps * np.arange(n_frames) / n_frames
    c = np.asarray(centre, dtype=np.float64)
    pos = np.stack([c[0] + radius * np.cos(theta), c[1] + radius * np.sin(theta),
                    c[2] + 0.15 * np.sin(2 * theta)], axis=1)
    yaw = theta + 0.3 * np.sin(2 * theta)
    return _trajectory(pos, yaw, 0.12 * np.sin(3 * theta), 0.05 * np.sin(theta), fps, t0)


def forward_trajectory(n_frames: int = 150, length_m: float = 3.0,
                       start: Vec3 = (2.5, 3.0, 1.4), heading: float = 0.0,
                       fps: float = 30.0, t0: float = 0.0) -> Trajectory:
    """Straight walk of ``length_m`` along ``heading`` (radians about z, 0 = +x), looking
    ahead with a gentle yaw/pitch sway and a slight height bob."""
    _check(n_frames, fps)
    a = np.linspace(0.0, 1.0, n_frames)
    direction = np.array([np.cos(heading), np.sin(heading), 0.0])
    pos = np.asarray(start, dtype=np.float64) + length_m * a[:, None] * direction
    pos[:, 2] += 0.05 * np.sin(4 * np.pi * a)
    yaw = heading + 0.12 * np.sin(2 * np.pi * a)
    return _trajectory(pos, yaw, 0.05 * np.sin(3 * np.pi * a), 0.03 * np.sin(2 * np.pi * a),
                       fps, t0)


def sideways_trajectory(n_frames: int = 90, length_m: float = 1.2,
                        start: Vec3 = (3.4, 3.0, 1.5), heading: float = np.pi / 2,
                        fps: float = 30.0, t0: float = 0.0) -> Trajectory:
    """Translation of ``length_m`` along the camera's right (x) axis while looking along
    ``heading`` (default +y, at a wall ~3 m away with a box in front): strong parallax,
    good for monocular initialisation. Small rotation sway (a few degrees) and a 5 cm
    vertical bob, so that the path is not a straight line (trajectory alignment is
    degenerate on collinear positions)."""
    _check(n_frames, fps)
    a = np.linspace(0.0, 1.0, n_frames)
    right = np.array([np.sin(heading), -np.cos(heading), 0.0])
    pos = np.asarray(start, dtype=np.float64) + length_m * a[:, None] * right
    pos[:, 2] += 0.05 * np.sin(np.pi * a)
    yaw = heading + 0.05 * np.sin(2 * np.pi * a)
    return _trajectory(pos, yaw, -0.08 + 0.03 * np.sin(np.pi * a), 0.02 * np.sin(np.pi * a),
                       fps, t0)

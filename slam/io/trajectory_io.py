"""Trajectory files: TUM (``timestamp tx ty tz qx qy qz qw``) and KITTI (3x4 rows).

Both hold world-from-camera poses ``T_world_cam``. TUM lines may be separated by
spaces or commas; ``#`` starts a comment line. Every malformed line raises
:class:`EvaluationError` naming the file and line number.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from slam.errors import EvaluationError
from slam.geometry.conventions import (
    pose_from_kitti_row,
    pose_from_t_q_xyzw,
    pose_to_kitti_row,
    pose_to_t_q_xyzw,
)
from slam.io.types import Trajectory


def _numeric_lines(path: Path, width: int) -> Iterator[tuple[int, np.ndarray]]:
    """(line number, (width,) float64 values) of each data line of a text file."""
    if not path.is_file():
        raise EvaluationError(f"trajectory file not found: {path}")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise EvaluationError(f"cannot read trajectory file {path}: {exc}") from exc
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        fields = stripped.replace(",", " ").split()
        if len(fields) != width:
            raise EvaluationError(f"{path}:{lineno}: expected {width} numbers, found {len(fields)}")
        try:
            values = np.array([float(f) for f in fields], dtype=np.float64)
        except ValueError as exc:
            raise EvaluationError(f"{path}:{lineno}: not a number ({exc})") from exc
        if not np.all(np.isfinite(values)):
            raise EvaluationError(f"{path}:{lineno}: non-finite value")
        yield lineno, values


def read_tum_trajectory(path: str | Path) -> Trajectory:
    """Poses of a TUM file (``timestamp tx ty tz qx qy qz qw`` per line, metres, seconds).

    Quaternions are normalised; a zero quaternion is an error.
    """
    p = Path(path)
    stamps: list[float] = []
    poses: list[np.ndarray] = []
    for lineno, v in _numeric_lines(p, 8):
        if np.linalg.norm(v[4:8]) < 1e-9:
            raise EvaluationError(f"{p}:{lineno}: zero quaternion")
        stamps.append(v[0])
        poses.append(pose_from_t_q_xyzw(v[1:4], v[4:8]))
    return _trajectory(p, stamps, poses)


def read_kitti_poses(path: str | Path, stamps: ArrayLike | None = None) -> Trajectory:
    """Poses of a KITTI file (12 numbers, row-major 3x4 per line).

    ``stamps`` (N,) seconds, one per line; the frame index (0, 1, …) when None.
    """
    p = Path(path)
    poses = [pose_from_kitti_row(v) for _, v in _numeric_lines(p, 12)]
    if stamps is None:
        times = np.arange(len(poses), dtype=np.float64)
    else:
        times = np.asarray(stamps, dtype=np.float64).reshape(-1)
        if len(times) != len(poses):
            raise EvaluationError(f"{p}: {len(poses)} poses but {len(times)} timestamps")
    return _trajectory(p, list(times), poses)


def _trajectory(path: Path, stamps: list[float], poses: list[np.ndarray]) -> Trajectory:
    if not poses:
        raise EvaluationError(f"{path}: no poses in trajectory file")
    return Trajectory(np.asarray(stamps, dtype=np.float64), np.stack(poses))


def write_tum_trajectory(path: str | Path, traj: Trajectory) -> None:
    """Write ``traj`` as a TUM file (creates parent folders)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# timestamp tx ty tz qx qy qz qw"]
    for stamp, T in zip(traj.stamps, traj.T_world_cam):
        t, q_xyzw = pose_to_t_q_xyzw(T)
        nums = " ".join(f"{x:.9f}" for x in (*t, *q_xyzw))
        lines.append(f"{stamp:.6f} {nums}")
    p.write_text("\n".join(lines) + "\n")


def write_kitti_trajectory(path: str | Path, traj: Trajectory) -> None:
    """Write ``traj`` as a KITTI file, one row-major 3x4 pose per line (no stamps)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    rows = (" ".join(f"{x:.9e}" for x in pose_to_kitti_row(T)) for T in traj.T_world_cam)
    p.write_text("".join(f"{row}\n" for row in rows))

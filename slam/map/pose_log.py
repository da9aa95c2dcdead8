"""The poses of tracked frames, kept relative to their reference keyframes.

A frame's pose is stored as ``T_cam_ref`` against the keyframe it was tracked
against, so that every later correction of that keyframe (bundle adjustment, loop
closing) moves the frame with it, as in ORB-SLAM. The log is a set of flat arrays
(about 110 bytes a frame); with ``max_poses`` it keeps only the newest poses and
counts the others as dropped, so that a service running for days holds a bounded
trajectory.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from slam.map.map import Map

_MIN_CAPACITY = 1024


class PoseLog:
    """Frame poses relative to reference keyframes, plus frozen absolute poses of earlier
    maps. ``max_poses`` (0: unlimited) caps the number of poses kept in all."""

    def __init__(self, max_poses: int = 0) -> None:
        if max_poses < 0:
            raise ValueError("max_poses must be >= 0")
        self.max_poses = max_poses
        self.dropped = 0
        self._stamps = np.zeros(_MIN_CAPACITY)
        self._ref = np.zeros(_MIN_CAPACITY, np.int64)
        self._T = np.zeros((_MIN_CAPACITY, 3, 4))
        self._start = 0
        self._n = 0
        self._frozen_stamps = np.zeros(0)
        self._frozen_T = np.zeros((0, 4, 4))

    def __len__(self) -> int:
        return self._n + len(self._frozen_stamps)

    def append(self, stamp: float, ref_kf_id: int, T_cam_ref: NDArray[np.float64]) -> None:
        """Log one frame: timestamp (s), reference keyframe id, ``T_cam_ref`` (4x4)."""
        if self.max_poses and len(self) >= self.max_poses:
            self._drop_oldest()
        end = self._start + self._n
        if end == len(self._stamps):
            self._make_room()
            end = self._start + self._n
        self._stamps[end] = stamp
        self._ref[end] = ref_kf_id
        self._T[end] = T_cam_ref[:3]
        self._n += 1

    def _drop_oldest(self) -> None:
        if len(self._frozen_stamps):
            self._frozen_stamps = self._frozen_stamps[1:]
            self._frozen_T = self._frozen_T[1:]
        else:
            self._start += 1
            self._n -= 1
        self.dropped += 1

    def _make_room(self) -> None:
        """Move the live rows to the front, or double the capacity when they fill it."""
        live = slice(self._start, self._start + self._n)
        size = len(self._stamps)
        if self._n > size // 2:
            size *= 2
        stamps, ref, T = np.zeros(size), np.zeros(size, np.int64), np.zeros((size, 3, 4))
        stamps[: self._n], ref[: self._n], T[: self._n] = (
            self._stamps[live], self._ref[live], self._T[live])
        self._stamps, self._ref, self._T, self._start = stamps, ref, T, 0

    def reference_ids(self) -> NDArray[np.int64]:
        """The distinct keyframe ids (sorted) the logged frames were tracked against."""
        return np.unique(self._ref[self._start: self._start + self._n])

    def _absolute(self, slam_map: Map) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Stamps (N,) and ``T_world_cam`` (N, 4, 4) of the relative part, with the map's
        current keyframe poses (call with the map lock held)."""
        live = slice(self._start, self._start + self._n)
        ref_ids, which = np.unique(self._ref[live], return_inverse=True)
        T_ref_world = np.array([slam_map.keyframe_pose(int(k)) for k in ref_ids])
        T_cam_ref = np.zeros((self._n, 4, 4))
        T_cam_ref[:, :3] = self._T[live]
        T_cam_ref[:, 3, 3] = 1.0
        T_cam_world = T_cam_ref @ T_ref_world.reshape(-1, 4, 4)[which.reshape(-1)]
        return self._stamps[live].copy(), _invert(T_cam_world)

    def trajectory(self, slam_map: Map) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Every logged pose, oldest first: stamps (N,) s and ``T_world_cam`` (N, 4, 4)."""
        with slam_map.lock:
            stamps, T = self._absolute(slam_map)
        return (np.concatenate([self._frozen_stamps, stamps]),
                np.concatenate([self._frozen_T, T]))

    def freeze(self, slam_map: Map) -> None:
        """Turn the relative poses into absolute ones (the map is about to be cleared)."""
        with slam_map.lock:
            stamps, T = self._absolute(slam_map)
        self._frozen_stamps = np.concatenate([self._frozen_stamps, stamps])
        self._frozen_T = np.concatenate([self._frozen_T, T])
        self._start = self._n = 0


def _invert(T: NDArray[np.float64]) -> NDArray[np.float64]:
    """Inverses of rigid transforms (N, 4, 4): ``[R^T, -R^T t]``."""
    R_t = np.transpose(T[:, :3, :3], (0, 2, 1))
    out = np.zeros_like(T)
    out[:, :3, :3] = R_t
    out[:, :3, 3] = -np.einsum("nij,nj->ni", R_t, T[:, :3, 3])
    out[:, 3, 3] = 1.0
    return out

"""The one module that converts quaternion orders and pose directions.

Identifiers name what they hold: ``q_xyzw`` (TUM, ROS, SciPy order) or ``q_wxyz``
(evo, COLMAP order); ``T_world_cam`` maps camera coordinates to world
coordinates (its translation is the camera centre), ``T_cam_world`` is its inverse.
Pinhole projection uses ``T_cam_world = [R | T]`` with ``R = R_c^T`` and
``T = -R_c^T C``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy.spatial.transform import Rotation

from slam.geometry.lie import se3_inv

Array = NDArray[np.float64]


def q_xyzw_to_wxyz(q_xyzw: Array) -> Array:
    """Reorder quaternions (..., 4) from ``xyzw`` to ``wxyz``."""
    q = np.asarray(q_xyzw, dtype=np.float64)
    return np.concatenate([q[..., 3:4], q[..., :3]], axis=-1)


def q_wxyz_to_xyzw(q_wxyz: Array) -> Array:
    """Reorder quaternions (..., 4) from ``wxyz`` to ``xyzw``."""
    q = np.asarray(q_wxyz, dtype=np.float64)
    return np.concatenate([q[..., 1:4], q[..., 0:1]], axis=-1)


def rotation_to_q_xyzw(R: Array) -> Array:
    """Unit quaternion ``xyzw`` (4,) with non-negative ``w`` of a rotation matrix (3x3)."""
    q = Rotation.from_matrix(np.asarray(R, dtype=np.float64)).as_quat()
    return q if q[3] >= 0 else -q


def q_xyzw_to_rotation(q_xyzw: Array) -> Array:
    """Rotation matrix (3x3) of a quaternion ``xyzw`` (normalised first)."""
    return Rotation.from_quat(np.asarray(q_xyzw, dtype=np.float64)).as_matrix()


def pose_from_t_q_xyzw(t: Array, q_xyzw: Array) -> Array:
    """Homogeneous pose (4x4) from a translation (3,) and a quaternion ``xyzw`` (4,)."""
    T = np.eye(4)
    T[:3, :3] = q_xyzw_to_rotation(q_xyzw)
    T[:3, 3] = np.asarray(t, dtype=np.float64)
    return T


def pose_to_t_q_xyzw(T: Array) -> tuple[Array, Array]:
    """Translation (3,) and quaternion ``xyzw`` (4,) of a pose (4x4)."""
    return T[:3, 3].copy(), rotation_to_q_xyzw(T[:3, :3])


def T_world_cam_from_T_cam_world(T_cam_world: Array) -> Array:
    """Invert a camera-from-world pose into world-from-camera (both 4x4)."""
    return se3_inv(T_cam_world)


def T_cam_world_from_T_world_cam(T_world_cam: Array) -> Array:
    """Invert a world-from-camera pose into camera-from-world (both 4x4)."""
    return se3_inv(T_world_cam)


def pose_from_kitti_row(row: Array) -> Array:
    """Pose (4x4) of a KITTI row: 12 numbers, row-major 3x4."""
    T = np.eye(4)
    T[:3, :4] = np.asarray(row, dtype=np.float64).reshape(3, 4)
    return T


def pose_to_kitti_row(T: Array) -> Array:
    """The 12 numbers (row-major 3x4) of a pose (4x4), as KITTI writes them."""
    return np.asarray(T[:3, :4], dtype=np.float64).reshape(12)

"""Tests of slam.geometry.conventions: quaternion orders and pose directions vs SciPy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from slam.geometry.conventions import (
    T_cam_world_from_T_world_cam,
    T_world_cam_from_T_cam_world,
    pose_from_kitti_row,
    pose_from_t_q_xyzw,
    pose_to_kitti_row,
    pose_to_t_q_xyzw,
    q_wxyz_to_xyzw,
    q_xyzw_to_rotation,
    q_xyzw_to_wxyz,
    rotation_to_q_xyzw,
)
from slam.geometry.lie import se3_exp

RNG = np.random.default_rng(7)


def test_quaternion_order_round_trip() -> None:
    q = RNG.normal(size=(10, 4))
    q_wxyz = q_xyzw_to_wxyz(q)
    np.testing.assert_array_equal(q_wxyz[:, 0], q[:, 3])
    np.testing.assert_array_equal(q_wxyz[:, 1:], q[:, :3])
    np.testing.assert_array_equal(q_wxyz_to_xyzw(q_wxyz), q)
    np.testing.assert_array_equal(q_xyzw_to_wxyz(q[0]), np.r_[q[0, 3], q[0, :3]])


def test_known_rotation_90_deg_about_z() -> None:
    R = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    s = np.sqrt(0.5)
    np.testing.assert_allclose(rotation_to_q_xyzw(R), [0.0, 0.0, s, s], atol=1e-15)
    np.testing.assert_allclose(q_xyzw_to_rotation(np.array([0.0, 0.0, s, s])), R, atol=1e-15)
    np.testing.assert_allclose(q_xyzw_to_wxyz(rotation_to_q_xyzw(R)), [s, 0.0, 0.0, s])


def test_rotation_quaternion_vs_scipy() -> None:
    for R in Rotation.random(20, random_state=3).as_matrix():
        q = rotation_to_q_xyzw(R)
        assert q[3] >= 0.0
        assert np.linalg.norm(q) == pytest.approx(1.0)
        q_sp = Rotation.from_matrix(R).as_quat()
        np.testing.assert_allclose(q, q_sp * np.sign(q_sp[3]), atol=1e-14)
        np.testing.assert_allclose(q_xyzw_to_rotation(q), R, atol=1e-14)
        np.testing.assert_allclose(q_xyzw_to_rotation(-3.0 * q), R, atol=1e-14)  # sign, norm


def test_pose_t_q_round_trip() -> None:
    T = se3_exp(RNG.normal(size=6))
    t, q = pose_to_t_q_xyzw(T)
    np.testing.assert_allclose(t, T[:3, 3])
    np.testing.assert_allclose(pose_from_t_q_xyzw(t, q), T, atol=1e-14)
    np.testing.assert_allclose(pose_from_t_q_xyzw(np.zeros(3), np.array([0, 0, 0, 1.0])), np.eye(4))


def test_kitti_rows_and_directions() -> None:
    T = se3_exp(RNG.normal(size=6))
    row = pose_to_kitti_row(T)
    assert row.shape == (12,)
    np.testing.assert_array_equal(row[[3, 7, 11]], T[:3, 3])
    np.testing.assert_array_equal(pose_from_kitti_row(row), T)
    T_cw = T_cam_world_from_T_world_cam(T)
    np.testing.assert_allclose(T_cw @ T, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(T_world_cam_from_T_cam_world(T_cw), T, atol=1e-12)
    # The translation of T_world_cam is the camera centre: T_cam_world maps it to the origin.
    np.testing.assert_allclose(T_cw @ np.r_[T[:3, 3], 1.0], [0, 0, 0, 1.0], atol=1e-12)

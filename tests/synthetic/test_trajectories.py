"""Trajectories: 30 Hz stamps, valid smooth poses inside free space, the intended motion."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from slam.errors import ConfigError
from slam.geometry.lie import se3_inv, so3_log
from slam.synthetic.scene import room_scene
from slam.synthetic.trajectories import (
    camera_rotation,
    forward_trajectory,
    loop_trajectory,
    sideways_trajectory,
)

MAKERS = [loop_trajectory, forward_trajectory, sideways_trajectory]


def _steps(T: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-step translation (m), rotation (deg), and translation in the earlier camera frame."""
    rel = np.stack([se3_inv(a) @ b for a, b in itertools.pairwise(T)])
    rot = np.degrees([np.linalg.norm(so3_log(r[:3, :3])) for r in rel])
    return np.linalg.norm(rel[:, :3, 3], axis=1), rot, rel[:, :3, 3]


def test_camera_rotation_axes() -> None:
    R = camera_rotation(0.0)
    np.testing.assert_allclose(R[:, 2], [1, 0, 0], atol=1e-12)  # optical axis along +x
    np.testing.assert_allclose(R[:, 1], [0, 0, -1], atol=1e-12)  # image down = world down
    np.testing.assert_allclose(R[:, 0], [0, -1, 0], atol=1e-12)
    R = camera_rotation(np.pi / 2, pitch=0.2, roll=0.1)
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0)
    assert R[2, 2] == pytest.approx(np.sin(0.2))  # looking up by the pitch


@pytest.mark.parametrize("make", MAKERS)
def test_trajectory_is_smooth_30hz_and_in_free_space(make) -> None:
    traj = make()  # default lengths: 300, 150, 90 frames
    n = len(traj)
    assert n >= 90
    np.testing.assert_allclose(np.diff(traj.stamps), 1 / 30, rtol=1e-9)
    R = traj.T_world_cam[:, :3, :3]
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape),
                               atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1.0)
    np.testing.assert_array_equal(traj.T_world_cam[:, 3], np.broadcast_to([0, 0, 0, 1], (n, 4)))
    trans, rot, _ = _steps(traj.T_world_cam)
    assert trans.max() < 0.06 and rot.max() < 3.0
    assert trans.mean() > 0.005  # it does move
    assert room_scene(0).is_free(traj.positions, clearance_m=0.3).all()


def test_loop_closes() -> None:
    T = loop_trajectory(300).T_world_cam
    trans, rot, _ = _steps(np.concatenate([T, T[:1]]))
    assert trans[-1] == pytest.approx(np.median(trans), rel=0.5)
    assert rot[-1] < 3.0
    path = trans.sum()
    assert path == pytest.approx(2 * np.pi, rel=0.05)  # radius 1 m


def test_motion_directions_in_the_camera_frame() -> None:
    _, _, t_side = _steps(sideways_trajectory(90).T_world_cam)
    assert np.all(t_side[:, 0] > 0.95 * np.linalg.norm(t_side, axis=1))  # along camera +x
    _, _, t_fwd = _steps(forward_trajectory(150).T_world_cam)
    assert np.all(t_fwd[:, 2] > 0.9 * np.linalg.norm(t_fwd, axis=1))  # along camera +z
    _, _, t_loop = _steps(loop_trajectory(300).T_world_cam)
    assert np.mean(np.abs(t_loop[:, 0]) > 0.7 * np.linalg.norm(t_loop, axis=1)) > 0.8


def test_bad_arguments_raise() -> None:
    with pytest.raises(ConfigError):
        loop_trajectory(1)
    with pytest.raises(ConfigError):
        forward_trajectory(10, fps=0.0)

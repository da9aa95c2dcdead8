"""The pose log: frame poses relative to keyframes, bounded when asked."""

from __future__ import annotations

import numpy as np
import pytest

from slam.geometry.lie import se3_exp, se3_inv
from slam.map.map import Map
from slam.map.pose_log import PoseLog
from tests.map.factories import make_frame, make_keyframe


def _map_with_keyframes(poses: list[np.ndarray]) -> Map:
    m = Map()
    rng = np.random.default_rng(1)
    for k, T in enumerate(poses):
        make_keyframe(m, make_frame(rng.uniform(0, 300, (5, 2)), frame_id=k, rng=rng), T)
    return m


def _pose(seed: int) -> np.ndarray:
    return se3_exp(np.random.default_rng(seed).normal(0, 0.3, 6))


def test_poses_follow_their_keyframes() -> None:
    m = _map_with_keyframes([_pose(0), _pose(1)])
    log = PoseLog()
    T_cam_ref = [_pose(10 + i) for i in range(4)]
    for i, T in enumerate(T_cam_ref):
        log.append(float(i), i % 2, T)
    stamps, T_world_cam = log.trajectory(m)
    assert stamps.tolist() == [0.0, 1.0, 2.0, 3.0]
    for i, T in enumerate(T_cam_ref):
        expected = se3_inv(T @ m.keyframes[i % 2].T_cam_world)
        np.testing.assert_allclose(T_world_cam[i], expected, atol=1e-12)
    # A keyframe that moves takes its frames along.
    m.keyframes[1].T_cam_world = _pose(99)
    _, moved = log.trajectory(m)
    np.testing.assert_allclose(moved[1], se3_inv(T_cam_ref[1] @ _pose(99)), atol=1e-12)
    np.testing.assert_allclose(moved[0], T_world_cam[0], atol=1e-12)


def test_a_capped_log_keeps_the_newest_and_counts_the_rest() -> None:
    m = _map_with_keyframes([np.eye(4)])
    log = PoseLog(max_poses=100)
    for i in range(5000):  # several times the capacity: rows are reused
        log.append(float(i), 0, np.eye(4))
    stamps, _ = log.trajectory(m)
    assert stamps.tolist() == [float(i) for i in range(4900, 5000)]
    assert log.dropped == 4900 and len(log) == 100
    assert log.reference_ids().tolist() == [0]


def test_frozen_poses_stay_absolute_and_count_toward_the_cap() -> None:
    m = _map_with_keyframes([_pose(3)])
    log = PoseLog(max_poses=3)
    log.append(0.0, 0, np.eye(4))
    log.append(1.0, 0, np.eye(4))
    log.freeze(m)
    m.clear()  # the earlier map is gone; its poses stay
    m2 = _map_with_keyframes([np.eye(4)])
    log.append(2.0, 0, np.eye(4))
    log.append(3.0, 0, np.eye(4))
    stamps, T = log.trajectory(m2)
    assert stamps.tolist() == [1.0, 2.0, 3.0] and log.dropped == 1
    np.testing.assert_allclose(T[0], se3_inv(_pose(3)), atol=1e-12)


def test_a_negative_cap_is_refused() -> None:
    with pytest.raises(ValueError):
        PoseLog(max_poses=-1)

"""Camera optical pose -> REP 103 PoseStamped, and the fixed-rate control loop."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

import slam_protocol as protocol
from clients.client import SlamClient
from clients.robot_example import (
    R_BODY_OPTICAL,
    ControlLoop,
    PoseStamped,
    optical_to_body_pose,
    to_pose_stamped,
)
from tests.clients.fake_server import FakeServer, pose_dict

IDENTITY_XYZW = [0.0, 0.0, 0.0, 1.0]
S = np.sqrt(0.5)


def q_of(R: np.ndarray) -> list[float]:
    return list(Rotation.from_matrix(R).as_quat())


def test_fixed_rotation_maps_optical_axes_to_body_axes() -> None:
    np.testing.assert_array_equal(R_BODY_OPTICAL @ [0, 0, 1], [1, 0, 0])  # forward
    np.testing.assert_array_equal(R_BODY_OPTICAL @ [1, 0, 0], [0, -1, 0])  # right = -left
    np.testing.assert_array_equal(R_BODY_OPTICAL @ [0, 1, 0], [0, 0, -1])  # down = -up
    assert np.linalg.det(R_BODY_OPTICAL) == pytest.approx(1.0)


def test_first_camera_is_the_identity_body_at_the_origin() -> None:
    p, q = optical_to_body_pose([0, 0, 0], IDENTITY_XYZW)
    np.testing.assert_allclose(p, 0.0)
    np.testing.assert_allclose(q, IDENTITY_XYZW, atol=1e-12)


def test_camera_looking_along_map_x_in_optical_convention_is_identity() -> None:
    # optical z (forward) along REP map +x, optical x (right) along -y, optical y along -z
    R_rep_cam = np.column_stack([[0, -1, 0], [0, 0, -1], [1, 0, 0]]).astype(float)
    R_map_cam = R_BODY_OPTICAL.T @ R_rep_cam  # the service's map is the optical frame
    _, q = optical_to_body_pose([0, 0, 0], q_of(R_map_cam))
    np.testing.assert_allclose(q, IDENTITY_XYZW, atol=1e-12)


@pytest.mark.parametrize(
    ("t_map", "want"),
    [([0, 0, 1], [1, 0, 0]), ([2, 0, 0], [0, -2, 0]), ([0, 0.5, 0], [0, 0, -0.5]),
     ([1, 2, 3], [3, -1, -2])],
)
def test_positions_move_into_rep103_axes(t_map: list[float], want: list[float]) -> None:
    p, _ = optical_to_body_pose(t_map, IDENTITY_XYZW)
    np.testing.assert_allclose(p, want, atol=1e-12)


@pytest.mark.parametrize(
    ("rotvec_optical", "want_xyzw"),
    [
        ([0, -np.pi / 2, 0], [0, 0, S, S]),  # turned left (about -y down) -> yaw +90 deg
        ([0, np.pi / 2, 0], [0, 0, -S, S]),  # turned right -> yaw -90 deg
        ([np.pi / 2, 0, 0], [0, -S, 0, S]),  # looking up (about optical x) -> pitch -90 deg
        ([0, 0, np.pi / 2], [S, 0, 0, S]),  # rolled right side down -> roll +90 deg
    ],
)
def test_turns_of_the_camera_become_rep103_yaw_pitch_roll(
    rotvec_optical: list[float], want_xyzw: list[float]
) -> None:
    q_map_cam = Rotation.from_rotvec(rotvec_optical).as_quat()
    _, q = optical_to_body_pose([0, 0, 0], q_map_cam)
    np.testing.assert_allclose(q, want_xyzw, atol=1e-12)


def test_body_axes_are_the_cameras_forward_left_up() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        R_map_cam = Rotation.from_rotvec(rng.normal(size=3)).as_matrix()
        _, q = optical_to_body_pose([0, 0, 0], q_of(R_map_cam))
        R_rep_body = Rotation.from_quat(q).as_matrix()
        np.testing.assert_allclose(R_rep_body[:, 0], R_BODY_OPTICAL @ R_map_cam[:, 2], atol=1e-9)
        np.testing.assert_allclose(R_rep_body[:, 1], R_BODY_OPTICAL @ -R_map_cam[:, 0], atol=1e-9)
        np.testing.assert_allclose(R_rep_body[:, 2], R_BODY_OPTICAL @ -R_map_cam[:, 1], atol=1e-9)
        assert q[3] >= 0


def test_pose_stamped_shape() -> None:
    msg = protocol.PoseMsg.from_dict(pose_dict(3, position=[0.0, 0.0, 2.0]))
    stamped = to_pose_stamped(msg)
    assert stamped is not None
    assert stamped["header"] == {"stamp": {"sec": 100, "nanosec": 100_000_000},
                                 "frame_id": "map"}
    assert stamped["pose"]["position"] == {"x": 2.0, "y": 0.0, "z": 0.0}
    assert stamped["pose"]["orientation"] == pytest.approx({"x": 0, "y": 0, "z": 0, "w": 1})
    lost = protocol.PoseMsg.from_dict({**pose_dict(4), "position": None, "orientation": None,
                                       "state": "lost"})
    assert to_pose_stamped(lost) is None


def test_control_loop_ticks_at_its_own_rate(fake: FakeServer) -> None:
    seen: list[PoseStamped | None] = []
    with SlamClient(fake.pub, fake.cmd, fake.ingest) as client:
        loop = ControlLoop(client, seen.append, rate_hz=20.0)
        assert loop.step() is None  # no pose yet: the controller still runs
        fake.wait_subscribed()
        fake.stream_hz = 200.0
        assert client.latest_pose(wait_s=2.0) is not None
        t0 = time.monotonic()
        loop.run(ticks=5)
        elapsed = time.monotonic() - t0
    assert 0.18 < elapsed < 10.0  # paced at 20 Hz (4 periods), not stuck (wide: a loaded CPU)
    assert len(seen) == 6 and all(s is not None for s in seen[1:])
    xs = [s["pose"]["position"]["z"] for s in seen[1:] if s is not None]
    assert xs == [0.0] * 5  # pose_dict moves along optical x = REP -y, never up
    ys = [s["pose"]["position"]["y"] for s in seen[1:] if s is not None]
    assert all(b < a for a, b in itertools.pairwise(ys))  # newer poses each tick
    assert loop.last_seq is not None and loop.last_seq > 0
    with pytest.raises(ValueError):
        ControlLoop(client, seen.append, rate_hz=0)

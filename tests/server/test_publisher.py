"""The publisher: map diffs against a hand-made map, fan-out, and never blocking."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import pytest
import zmq

from server import protocol as proto
from server.publisher import MapDiffer, Publisher, encode_image, pose_fields
from slam.geometry.conventions import pose_from_t_q_xyzw
from slam.geometry.lie import make_pose, so3_exp
from slam.map.map import Map
from tests.map.factories import make_frame, make_keyframe
from tests.server.service_helpers import ANY_PORT


def _map_with_points(n: int, color: bool = False) -> tuple[Map, Any]:
    m = Map()
    k = n + 5  # spare keypoints for points added later
    uv = np.column_stack([np.arange(k) % 300 + 5.0, np.arange(k) // 300 + 5.0])
    frame = make_frame(uv)
    if color:
        frame.color = np.zeros((240, 320, 3), np.uint8)
        frame.color[..., 0] = 10  # blue
        frame.color[..., 2] = 200  # red
    kf = make_keyframe(m, frame, np.eye(4))
    for i in range(n):
        m.add_point(np.array([i, 0.0, 1.0]), kf, i)
    return m, kf


def test_pose_fields_round_trip_through_the_conventions_module() -> None:
    T = make_pose(so3_exp(np.array([0.1, -0.4, 0.3])), np.array([1.0, 2.0, -3.0]))
    position, orientation = pose_fields(T)
    assert position is not None and orientation is not None and orientation[3] >= 0
    assert np.allclose(pose_from_t_q_xyzw(np.array(position), np.array(orientation)), T)
    assert pose_fields(None) == (None, None)


def test_map_diffs_report_added_moved_and_removed_points() -> None:
    m, kf = _map_with_points(5, color=True)
    differ = MapDiffer()
    first = differ.diff(m)
    assert first is not None and first.seq == 0 and not first.reset
    assert first.added_ids.tolist() == [0, 1, 2, 3, 4]
    assert np.allclose(first.added_xyz[:, 0], np.arange(5))
    assert np.all(first.added_rgb == [200, 0, 10])  # the keyframe colour, as RGB
    assert differ.diff(m) is None  # nothing changed

    # Point 1 moves below the threshold, point 2 above it.
    m.store.set("xyz", 1, m.store.get_one("xyz", 1) + np.array([0.0, 0.0, 0.002]))
    m.store.set("xyz", 2, m.store.get_one("xyz", 2) + np.array([0.0, 0.1, 0.0]))
    m.erase_point(3)
    m.add_point(np.array([9.0, 9.0, 9.0]), kf, 7)
    update = differ.diff(m)
    assert update is not None and update.seq == 1
    assert update.added_ids.tolist() == [5] and np.allclose(update.added_xyz, [[9, 9, 9]])
    assert np.all(update.added_rgb == [200, 0, 10])
    assert update.moved_ids.tolist() == [2] and np.allclose(update.moved_xyz, [[2, 0.1, 1]])
    assert update.removed_ids.tolist() == [3]

    ids, xyz, _, seq = differ.published()
    assert ids.tolist() == [0, 1, 2, 4, 5] and seq == 2
    assert np.allclose(xyz[1], [1, 0, 1]) and np.allclose(xyz[2], [2, 0.1, 1])  # as published

    m.clear()  # a new monocular map: same map object, new point store
    cleared = differ.diff(m)
    assert cleared is not None and cleared.reset and len(cleared.added_ids) == 0
    assert cleared.removed_ids.tolist() == [0, 1, 2, 4, 5]

    replacement, _ = _map_with_points(2)
    swapped = differ.diff(replacement)
    assert swapped is not None and swapped.reset
    assert len(swapped.removed_ids) == 0  # nothing left published
    assert swapped.added_ids.tolist() == [0, 1] and np.all(swapped.added_rgb == 160)


def test_keyframes_are_announced_once_and_again_when_moved() -> None:
    m, kf = _map_with_points(3)
    differ = MapDiffer()
    (new,) = differ.keyframes(m)
    assert (new.id, new.moved, new.n_points) == (kf.id, False, 3)
    assert differ.keyframes(m) == []
    kf.T_cam_world = make_pose(np.eye(3), np.array([0.0, 0.0, 0.003]))
    assert differ.keyframes(m) == []  # 3 mm: below the threshold
    kf.T_cam_world = make_pose(np.eye(3), np.array([0.0, 0.0, 0.5]))
    (moved,) = differ.keyframes(m)
    assert moved.moved and np.allclose(moved.position, [0, 0, -0.5])


def test_images_are_scaled_to_640_wide_with_their_keypoints() -> None:
    image = np.zeros((960, 1280), np.uint8)
    cv2.circle(image, (400, 300), 20, 255, -1)
    jpeg, w, h, uv = encode_image(image, np.array([[400.0, 300.0], [1279.0, 959.0]]))
    decoded = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_GRAYSCALE)
    assert decoded is not None and (w, h) == (640, 480) and decoded.shape == (480, 640)
    assert np.allclose(uv, np.array([[200, 150], [639.5, 479.5]]))
    assert decoded[150, 200] > 200 and decoded[10, 10] < 20
    small = np.zeros((48, 64, 3), np.uint8)
    assert encode_image(small, np.zeros((0, 2)))[1:3] == (64, 48)


@pytest.fixture
def ctx() -> Iterator[zmq.Context[Any]]:
    context: zmq.Context[Any] = zmq.Context()
    yield context
    context.destroy(linger=0)


def test_twenty_subscribers_get_everything_and_a_stalled_one_blocks_nothing(
        ctx: zmq.Context[Any]) -> None:
    pub = Publisher(ctx, ANY_PORT, hwm=100)
    subs = []
    for _ in range(20):
        s = ctx.socket(zmq.SUB)
        s.setsockopt(zmq.SUBSCRIBE, b"pose")
        s.connect(pub.endpoint)
        subs.append(s)
    stalled = ctx.socket(zmq.SUB)
    stalled.setsockopt(zmq.RCVHWM, 1)
    stalled.setsockopt(zmq.SUBSCRIBE, b"")
    stalled.connect(pub.endpoint)
    t_end = time.monotonic() + 5.0
    while pub.subscribers() < 21 and time.monotonic() < t_end:
        time.sleep(0.01)
    assert pub.subscribers() == 21
    time.sleep(0.3)  # subscriptions travel after the connection
    n = 200
    got: list[list[int]] = [[] for _ in subs]
    for seq in range(n):  # 500 Hz, far above the pose rate
        assert pub.send(proto.TOPIC_POSE, {"seq": seq})
        time.sleep(0.002)
        for received, s in zip(got, subs, strict=True):  # readers keep up; the stalled one not
            while s.poll(0):
                received.append(proto.decode(s.recv_multipart()[1])["seq"])
    for received, s in zip(got, subs, strict=True):
        while len(received) < n and s.poll(1000):
            received.append(proto.decode(s.recv_multipart()[1])["seq"])
        assert received == list(range(n))
    blob = {"pad": b"x" * 100_000}
    t0 = time.perf_counter()
    for _ in range(2000):  # far past the stalled subscriber's high-water marks
        pub.send(proto.TOPIC_MAP, blob)
    assert time.perf_counter() - t0 < 5.0 and pub.failed == 0
    for s in [*subs, stalled]:
        s.close()
    deadline = time.monotonic() + 5.0
    while pub.subscribers() > 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pub.subscribers() == 0
    pub.close()
    assert not pub.send(proto.TOPIC_POSE, {"seq": 0})

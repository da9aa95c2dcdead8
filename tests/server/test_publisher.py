"""The publisher: images, fan-out, and never blocking."""

from __future__ import annotations

import time
from typing import Any

import cv2
import numpy as np
import zmq

import slam_protocol as proto
from server.publisher import Publisher, encode_image
from tests.server.service_helpers import ANY_PORT


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


PROBE_SEQ = -1


def _keep_seq(received: list[int], sock: zmq.Socket[Any]) -> None:
    seq = proto.decode(sock.recv_multipart()[1])["seq"]
    if seq != PROBE_SEQ:
        received.append(seq)


def _wait_subscribed(pub: Publisher, subs: list[zmq.Socket[Any]], timeout_s: float = 10.0,
                     ) -> None:
    """Publish probe poses until every SUB socket in ``subs`` has received one (its
    subscription reached the PUB socket, which ZeroMQ does after the connection)."""
    waiting = set(subs)
    poller = zmq.Poller()
    for s in subs:
        poller.register(s, zmq.POLLIN)
    t_end = time.monotonic() + timeout_s
    while waiting and time.monotonic() < t_end:
        pub.send(proto.TOPIC_POSE, {"seq": PROBE_SEQ})
        for s, _ in poller.poll(50):
            s.recv_multipart()
            waiting.discard(s)
    assert not waiting, f"{len(waiting)} subscribers never got a message"


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
    assert pub.wait_subscribers(lambda n: n == 21, 10.0)
    _wait_subscribed(pub, [*subs, stalled])
    n = 200
    got: list[list[int]] = [[] for _ in subs]
    for seq in range(n):
        assert pub.send(proto.TOPIC_POSE, {"seq": seq})
        time.sleep(0.002)  # paces the poses at 500 Hz, far above the real rate: no sync
        for received, s in zip(got, subs, strict=True):  # readers keep up; the stalled one not
            while s.poll(0):
                _keep_seq(received, s)
    for received, s in zip(got, subs, strict=True):
        while len(received) < n and s.poll(5000):
            _keep_seq(received, s)
        assert received == list(range(n))
    blob = {"pad": b"x" * 100_000}
    for _ in range(2000):  # far past the stalled subscriber's high-water marks: a send
        pub.send(proto.TOPIC_MAP, blob)  # that blocked would hang here (the test's timeout)
    assert pub.failed == 0
    for s in [*subs, stalled]:
        s.close()
    assert pub.wait_subscribers(lambda n: n == 0, 10.0)
    pub.close()
    assert not pub.send(proto.TOPIC_POSE, {"seq": 0})

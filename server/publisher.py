"""The PUB socket, and the images that go out on it.

Publishing never blocks: the socket has a send high-water mark and every send is
non-blocking, so a subscriber that stops reading loses messages (ZeroMQ drops them
for that subscriber alone) and never slows tracking. Map, keyframe and loop messages
come from the system's events (:mod:`server.map_relay`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import zmq
from numpy.typing import NDArray
from zmq.utils.monitor import recv_monitor_message

import slam_protocol as proto

log = logging.getLogger(__name__)

IMAGE_MAX_WIDTH = 640
JPEG_QUALITY = 80


class Publisher:
    """A bound PUB socket shared by the service's threads (sends are serialised by a
    lock and never block). ``sent``/``failed`` count messages; ``subscribers`` the
    connected peers (from the socket monitor)."""

    def __init__(self, ctx: zmq.Context[Any], endpoint: str, hwm: int = 100,
                 setup: Any = None) -> None:
        self._sock = ctx.socket(zmq.PUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, hwm)
        if setup is not None:
            setup(self._sock)
        self._monitor = self._sock.get_monitor_socket(
            zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
        try:
            self._sock.bind(endpoint)
        except zmq.ZMQError:
            self._monitor.close(linger=0)
            self._sock.close(linger=0)
            raise
        self.endpoint: str = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._lock = threading.Lock()
        self.sent = 0
        self.failed = 0
        self._peers = 0

    def send(self, topic: str, msg: dict[str, Any]) -> bool:
        """Publish ``msg`` under ``topic``; False (and counted) when it could not be queued."""
        body = proto.encode(msg)
        with self._lock:
            if self._sock.closed:
                return False
            try:
                self._sock.send_multipart([topic.encode("ascii"), body], flags=zmq.NOBLOCK)
            except zmq.ZMQError as exc:
                self.failed += 1
                log.debug("publish of %s dropped: %s", topic, exc)
                return False
            self.sent += 1
            return True

    def subscribers(self) -> int:
        """Connected subscribers now (drains the monitor; call from one thread only)."""
        while self._monitor is not None and not self._monitor.closed:
            try:
                if not self._monitor.poll(0):
                    break
                event = recv_monitor_message(self._monitor, flags=zmq.NOBLOCK)
            except zmq.ZMQError:
                break
            if event["event"] == zmq.EVENT_ACCEPTED:
                self._peers += 1
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                self._peers = max(0, self._peers - 1)
        return self._peers

    def wait_subscribers(self, done: Callable[[int], bool], timeout_s: float) -> bool:
        """Wait on the monitor until ``done(subscribers())`` or ``timeout_s`` seconds
        pass; whether it came true (one thread only, as :meth:`subscribers`)."""
        t_end = time.monotonic() + timeout_s
        while not done(self.subscribers()):
            remaining_ms = int(1000 * (t_end - time.monotonic()))
            if remaining_ms <= 0 or self._monitor.closed:
                return False
            self._monitor.poll(remaining_ms)
        return True

    def close(self) -> None:
        with self._lock:
            with contextlib.suppress(zmq.ZMQError):
                self._sock.disable_monitor()
            self._monitor.close(linger=0)
            self._sock.close(linger=0)


def encode_image(image: NDArray[np.uint8], uv: NDArray[np.float64],
                 max_width: int = IMAGE_MAX_WIDTH) -> tuple[bytes, int, int, NDArray[np.float32]]:
    """JPEG bytes, width, height of ``image`` ((H, W) grey or (H, W, 3) BGR) scaled down
    to at most ``max_width`` pixels wide, and ``uv`` (K, 2) pixels scaled alike."""
    h, w = image.shape[:2]
    scale = min(1.0, max_width / w)
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        image = np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), np.uint8)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("JPEG encoding failed")
    uv_out = (np.asarray(uv, np.float64).reshape(-1, 2) * scale).astype(np.float32)
    return buf.tobytes(), image.shape[1], image.shape[0], uv_out

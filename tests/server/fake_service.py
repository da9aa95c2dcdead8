"""A stand-in SLAM service for the viewer tests: XPUB + ROUTER speaking ``slam_protocol``.

Also builds a small synthetic run (a camera sliding sideways in front of a coloured wall
and over a floor) as the messages the real service would publish.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import zmq

import slam_protocol as protocol
from server.security import CurveServerKeys, start_authenticator

FX, CX, CY, WIDTH, HEIGHT = 320.0, 320.0, 240.0, 640, 480
POLL_MS = 50  # how often the serving thread looks at its stop flag
JOIN_TIMEOUT_S = 10.0  # the serving thread ends within one poll; this is for a loaded CPU


class FakeService:
    """PUB (XPUB, to see the bridge subscribe) and a command ROUTER on free local ports.

    ``snapshot`` is what the ``snapshot`` command returns; ``answer=False`` makes the
    ROUTER swallow requests (a hung service).  ``commands`` records every request.

    The context is the fake's own. The ROUTER belongs to the serving thread, which
    closes it as it ends; the PUB socket belongs to the test's thread (``publish``,
    ``wait_subscribed``); :meth:`close` closes it and destroys the context.
    """

    def __init__(self, snapshot: dict[str, Any], answer: bool = True,
                 curve: CurveServerKeys | None = None) -> None:
        self.snapshot, self.answer = snapshot, answer
        self.commands: list[str] = []
        self._ctx = zmq.Context()
        self._auth = None if curve is None else start_authenticator(self._ctx, curve)
        self._pub = self._ctx.socket(zmq.XPUB)
        self._pub.setsockopt(zmq.LINGER, 0)
        self._pub.setsockopt(zmq.SNDHWM, 100_000)
        self._router = self._ctx.socket(zmq.ROUTER)
        self._router.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            curve.apply(self._pub)
            curve.apply(self._router)
        self.pub_endpoint = _bind(self._pub)
        self.cmd_endpoint = _bind(self._router)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            self._answer_until_stopped()
        finally:
            self._router.close(linger=0)

    def _answer_until_stopped(self) -> None:
        while not self._stop.is_set():
            if not self._router.poll(POLL_MS):
                continue
            frames = self._router.recv_multipart()
            envelope, body = frames[:-1], frames[-1]
            request = protocol.decode(body)
            self.commands.append(str(request.get("cmd")))
            if not self.answer:
                continue
            if request.get("cmd") == "snapshot":
                reply = self.snapshot
            elif request.get("cmd") in ("pause", "resume"):
                reply = {"ok": True}
            else:
                reply = {"ok": False, "error": "not in the fake"}
            self._router.send_multipart([*envelope, protocol.encode(reply)])

    def wait_subscribed(self, timeout: float = 5.0) -> None:
        """Block until a subscriber (the bridge) has subscribed."""
        if not self._pub.poll(int(timeout * 1000)):
            raise TimeoutError("nobody subscribed to the fake PUB socket")
        self._pub.recv()

    def publish(self, topic: str, msg: dict[str, Any] | bytes) -> bytes:
        """Publish ``msg`` (a map, or raw bytes) on ``topic``; returns the payload sent."""
        payload = msg if isinstance(msg, bytes) else protocol.encode(msg)
        self._pub.send_multipart([topic.encode("ascii"), payload])
        return payload

    def close(self) -> None:
        """Stop the thread, close the sockets, destroy the context (on every path)."""
        self._stop.set()
        self._thread.join(JOIN_TIMEOUT_S)
        try:
            self._pub.close(linger=0)
            if self._auth is not None:
                self._auth.stop()
        finally:
            self._ctx.destroy(linger=0)  # closes the ROUTER too if its thread is stuck
        assert not self._thread.is_alive(), "the fake service's thread did not stop"


def _bind(sock: zmq.Socket[Any]) -> str:
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    return f"tcp://127.0.0.1:{port}"


@dataclass
class SyntheticRun:
    """Ground truth of the fake run: points (N,3) world metres, colours (N,3) uint8 RGB,
    camera positions (F,3) (orientation identity: looking along +z)."""

    xyz: np.ndarray
    rgb: np.ndarray
    positions: np.ndarray

    @classmethod
    def make(cls, n_frames: int = 60, seed: int = 0) -> SyntheticRun:
        rng = np.random.default_rng(seed)
        wall = np.column_stack([rng.uniform(-2, 3.5, 900), rng.uniform(-1.5, 1.0, 900),
                                rng.uniform(3.8, 4.2, 900)])
        floor = np.column_stack([rng.uniform(-2, 3.5, 600), rng.uniform(0.9, 1.1, 600),
                                 rng.uniform(0.5, 4.0, 600)])
        xyz = np.vstack([wall, floor]).astype(np.float32)
        hue = ((xyz[:, 0] + 2) / 5.5 * 150).astype(np.uint8)
        hsv = np.column_stack([hue, np.full_like(hue, 200), np.full_like(hue, 230)])
        rgb = cv2.cvtColor(hsv[None], cv2.COLOR_HSV2RGB)[0]
        x = np.linspace(0.0, 1.5, n_frames)
        positions = np.column_stack([x, 0.05 * np.sin(4 * x), np.zeros_like(x)])
        return cls(xyz, rgb, positions.astype(np.float64))

    def pose(self, seq: int) -> dict[str, Any]:
        return {"seq": seq, "stamp": protocol.stamp_from_seconds(seq / 30.0),
                "frame_id": "map", "child_frame_id": "camera",
                "position": self.positions[seq].tolist(), "orientation": [0.0, 0.0, 0.0, 1.0],
                "state": "tracking", "latency_ms": 12.5, "keyframe": seq % 10 == 0,
                "source_index": seq, "sender": None}

    def keyframe(self, seq: int) -> dict[str, Any]:
        return {"id": seq // 10, "stamp": protocol.stamp_from_seconds(seq / 30.0),
                "position": self.positions[seq].tolist(), "orientation": [0.0, 0.0, 0.0, 1.0],
                "n_points": 100}

    def map_update(self, seq: int, ids: np.ndarray) -> dict[str, Any]:
        return protocol.MapUpdateMsg(seq, ids.astype(np.int64), self.xyz[ids],
                                     self.rgb[ids]).to_dict()

    def image(self, seq: int) -> dict[str, Any]:
        """A JPEG of the points seen from pose ``seq`` with their pixels as ``uv``."""
        cam = self.xyz - self.positions[seq].astype(np.float32)
        front = cam[:, 2] > 0.1
        uv = np.column_stack([FX * cam[front, 0] / cam[front, 2] + CX,
                              FX * cam[front, 1] / cam[front, 2] + CY]).astype(np.float32)
        inside = (uv[:, 0] >= 0) & (uv[:, 0] < WIDTH) & (uv[:, 1] >= 0) & (uv[:, 1] < HEIGHT)
        uv, colours = uv[inside], self.rgb[front][inside]
        image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        image[:] = np.linspace(40, 90, HEIGHT, dtype=np.uint8)[:, None, None]
        for (u, v), c in zip(uv.astype(int), colours):
            cv2.circle(image, (int(u), int(v)), 4, tuple(int(k) for k in c[::-1]), -1)
        jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()
        return {"seq": seq, "stamp": protocol.stamp_from_seconds(seq / 30.0), "jpeg": jpeg,
                "width": WIDTH, "height": HEIGHT, "uv": protocol.pack_array(uv)}

    def status(self, seq: int) -> dict[str, Any]:
        return protocol.StatusMsg(
            fps=30.0, frames=seq + 1, tracked_frames=seq + 1, state="tracking",
            keyframes=seq // 10 + 1, map_points=len(self.xyz), loops_closed=0,
            relocalisations=0, maps=1, queue_depth={"frames": 0, "mapping": 0}, drops=0,
            paused=False, finished=False).to_dict()

    def loop(self, cur_kf: int, loop_kf: int) -> dict[str, Any]:
        return protocol.LoopMsg(cur_kf, loop_kf, protocol.Stamp(1, 0), protocol.Stamp(0, 0),
                                1.0, 120).to_dict()

    def snapshot(self, n_poses: int, n_points: int,
                 loops: tuple[tuple[int, int], ...] = ()) -> dict[str, Any]:
        """The ``snapshot`` reply after ``n_poses`` frames with the first ``n_points``."""
        ids = np.arange(n_points, dtype=np.int64)
        positions = self.positions[:n_poses].astype(np.float32)
        quats = np.tile(np.array([0, 0, 0, 1], np.float32), (n_poses, 1))
        return {
            "ok": True,
            "keyframes": [{"id": s // 10, "stamp": protocol.stamp_from_seconds(s / 30.0),
                           "position": self.positions[s].tolist(),
                           "orientation": [0.0, 0.0, 0.0, 1.0]} for s in range(0, n_poses, 10)],
            "points": {"ids": protocol.pack_array(ids), "xyz": protocol.pack_array(self.xyz[ids]),
                       "rgb": protocol.pack_array(self.rgb[ids])},
            "trajectory": {"stamps": protocol.pack_array(np.arange(n_poses) / 30.0),
                           "positions": protocol.pack_array(positions),
                           "orientations": protocol.pack_array(quats)},
            "loops": [self.loop(a, b) for a, b in loops], "last_seq": n_poses - 1,
        }

    def messages(self, start: int, stop: int) -> Iterator[tuple[str, dict[str, Any]]]:
        """The PUB messages of frames ``start``..``stop - 1`` in publishing order."""
        per_frame = len(self.xyz) // len(self.positions) + 1
        for seq in range(start, stop):
            yield protocol.TOPIC_POSE, self.pose(seq)
            if seq % 10 == 0:
                yield protocol.TOPIC_KEYFRAME, self.keyframe(seq)
            ids = np.arange(seq * per_frame, min((seq + 1) * per_frame, len(self.xyz)))
            if len(ids):
                yield protocol.TOPIC_MAP, self.map_update(seq, ids)
            if seq % 3 == 0:
                yield protocol.TOPIC_IMAGE, self.image(seq)
            if seq % 15 == 0:
                yield protocol.TOPIC_STATUS, self.status(seq)


def publish_run(service: FakeService, run: SyntheticRun, start: int, stop: int,
                rate_hz: float = 0.0) -> None:
    """Publish frames ``start``..``stop - 1`` of ``run`` (paced at ``rate_hz`` when > 0)."""
    for topic, msg in run.messages(start, stop):
        service.publish(topic, msg)
        if rate_hz > 0 and topic == protocol.TOPIC_POSE:
            time.sleep(1.0 / rate_hz)  # models the camera's frame rate: not a synchronisation

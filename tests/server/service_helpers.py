"""Helpers of the service tests: synthetic frames rendered once, an in-memory source,
services on ephemeral ports, and small ZeroMQ clients."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any

import cv2
import numpy as np
import zmq
from numpy.typing import NDArray

import slam_protocol as protocol
from server.service import ServiceOptions, SlamService
from slam.camera import Calibration
from slam.config import load_config
from slam.io.types import SensorFrame, Trajectory
from slam.synthetic.source import make_synthetic_source

N_FRAMES = 40
ANY_PORT = "tcp://127.0.0.1:*"


@lru_cache(maxsize=1)
def synthetic_run() -> tuple[tuple[SensorFrame, ...], Calibration, Trajectory]:
    """The frames, calibration and ground truth of ``synthetic:sideways?n=40`` RGB-D."""
    source = make_synthetic_source("sideways", "rgbd", n_frames=N_FRAMES)
    assert source.calibration is not None
    return tuple(source), source.calibration, source.ground_truth()


class ListSource:
    """A replayable source over frames in memory; ``broken`` indices raise on read."""

    sensors = frozenset({"rgbd"})

    def __init__(self, frames: tuple[SensorFrame, ...], calibration: Calibration,
                 broken: frozenset[int] = frozenset(), name: str = "list") -> None:
        self.frames = frames
        self.calibration = calibration
        self.broken = broken
        self.name = name

    @property
    def length(self) -> int:
        return len(self.frames)

    def frame(self, index: int) -> SensorFrame:
        if index in self.broken:
            raise ValueError(f"frame {index} is corrupt")
        return self.frames[index]

    def __iter__(self) -> Iterator[SensorFrame]:
        return (self.frame(i) for i in range(self.length))


def options(calibration: Calibration, **kw: Any) -> ServiceOptions:
    """Service options on ephemeral ports; a fast status period for the tests."""
    overrides = kw.pop("overrides", {})
    kw = {"status_period_s": 0.2, "pub_endpoint": ANY_PORT, "cmd_endpoint": ANY_PORT,
          "ingest_endpoint": ANY_PORT, **kw}
    return ServiceOptions("rgbd", calibration, load_config(None, overrides), **kw)


def start_service(source: Any | None = None, **kw: Any) -> SlamService:
    _, calibration, _ = synthetic_run()
    return SlamService(options(calibration, **kw), source).start()


def relative_truth(gt: Trajectory, origin: int = 0) -> NDArray[np.float64]:
    """Ground-truth poses (N, 4, 4) in the frame of camera ``origin`` (the first one
    tracked: the map frame of an RGB-D map)."""
    G0_inv = np.linalg.inv(gt.T_world_cam[origin])
    return np.einsum("ij,njk->nik", G0_inv, gt.T_world_cam)


def request(ctx: zmq.Context[Any], endpoint: str, msg: dict[str, Any] | bytes,
            timeout_s: float = 10.0, setup: Callable[[zmq.Socket[Any]], None] | None = None
            ) -> dict[str, Any] | None:
    """One request on a fresh REQ socket; the decoded reply, or None on timeout (also
    when the request cannot even be sent: a REQ socket whose peer refused its CURVE key
    has no pipe, and a send without a deadline would wait forever)."""
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDTIMEO, int(timeout_s * 1000))
    if setup is not None:
        setup(sock)
    sock.connect(endpoint)
    try:
        try:
            sock.send(msg if isinstance(msg, bytes) else protocol.encode(msg))
        except zmq.Again:
            return None
        if not sock.poll(int(timeout_s * 1000)):
            return None
        return protocol.decode(sock.recv())
    finally:
        sock.close()


class Subscriber:
    """A SUB socket collecting decoded messages by topic."""

    def __init__(self, ctx: zmq.Context[Any], endpoint: str,
                 setup: Callable[[zmq.Socket[Any]], None] | None = None) -> None:
        self.sock = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 100000)
        if setup is not None:
            setup(self.sock)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(endpoint)
        self.messages: dict[str, list[dict[str, Any]]] = {}

    def collect(self, until: Callable[[Subscriber], bool], timeout_s: float) -> bool:
        """Receive until ``until(self)`` or the timeout; returns whether it came true."""
        t_end = time.monotonic() + timeout_s
        while time.monotonic() < t_end:
            if until(self):
                return True
            if self.sock.poll(50):
                topic, body = self.sock.recv_multipart()
                self.messages.setdefault(topic.decode(), []).append(protocol.decode(body))
        return until(self)

    def of(self, topic: str) -> list[dict[str, Any]]:
        return self.messages.get(topic, [])

    def close(self) -> None:
        self.sock.close()


def wait_connected(sub: Subscriber, timeout_s: float = 5.0) -> None:
    """Wait until ``sub`` receives anything (the status topic comes every 0.2 s)."""
    assert sub.collect(lambda s: bool(s.messages), timeout_s), "no message from the service"


def png(image: NDArray[Any]) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


def ingest_message(frame: SensorFrame, seq: int) -> dict[str, Any]:
    """An ingestion message of a synthetic RGB-D frame: grey PNG + 16-bit depth PNG."""
    assert frame.depth_m is not None
    depth_units = np.round(frame.depth_m * 5000.0).clip(0, 65535).astype(np.uint16)
    return protocol.IngestFrame(
        seq, protocol.Stamp.from_seconds(frame.timestamp), "png", png(frame.image),
        depth=png(depth_units), depth_scale=5000.0).to_dict()

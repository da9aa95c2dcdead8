"""Pushing frames to the service's ingestion socket (a DEALER), one reply per frame.

Frames go out as :class:`slam_protocol.IngestFrame` messages and come back as
:class:`slam_protocol.IngestReply`: the pose once tracked, ``dropped`` when the
service's bounded queue dropped the frame, an error when it refused it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import zmq
from numpy.typing import NDArray

from clients.connection import POLL_MS, Connection
from clients.errors import ClientError, ClientTimeoutError, ServerError
from clients.images import DEFAULT_DEPTH_SCALE, Image, encode_depth, encode_image
from slam_protocol import IngestFrame, IngestReply, ProtocolError, Stamp

log = logging.getLogger(__name__)

PUSH_SNDHWM = 4
"""Frames a pusher lets ZeroMQ queue before ``send_frame`` blocks: a camera pushing
faster than the service takes frames is slowed down here instead of building seconds
of backlog (the service keeps only the freshest frames anyway)."""


class FrameLike(Protocol):
    """What :meth:`FramePusher.push_frames` reads: ``image`` (H, W) uint8 (or encoded
    bytes), ``timestamp`` seconds; optional ``depth_m`` (H, W) float32 metres and
    ``right`` (H, W) uint8 (a :class:`slam.io.types.SensorFrame` fits)."""

    @property
    def image(self) -> Image: ...
    @property
    def timestamp(self) -> float: ...


@dataclass
class PushSummary:
    """Replies of :meth:`FramePusher.push_frames`, in arrival order; ``missing`` frames
    got none. ``round_trip_ms`` (one per reply, same order): from sending the frame to
    receiving its reply, on this client's clock (the latency a robot sees)."""

    sent: int = 0
    replies: list[Any] = field(default_factory=list)
    missing: int = 0
    round_trip_ms: list[float] = field(default_factory=list)

    @property
    def tracked(self) -> int:
        return sum(1 for r in self.replies if r.ok and r.pose is not None)

    @property
    def dropped(self) -> int:
        return sum(1 for r in self.replies if getattr(r, "dropped", False))

    @property
    def errors(self) -> list[str]:
        return [r.error for r in self.replies if not r.ok and not getattr(r, "dropped", False)]


class FramePusher:
    """Pushes frames to the ingestion socket at ``endpoint``; replies wait up to
    ``timeout_s``. The DEALER socket opens at the first frame."""

    def __init__(self, connection: Connection, endpoint: str, timeout_s: float) -> None:
        self._conn = connection
        self.endpoint, self.timeout_s = endpoint, timeout_s
        self._dealer: zmq.Socket[Any] | None = None
        self._seq = 0
        self._pending: dict[int, IngestReply] = {}

    def _socket(self) -> zmq.Socket[Any]:
        if self._dealer is None:
            self._dealer = self._conn.socket(zmq.DEALER, self.endpoint, sndhwm=PUSH_SNDHWM)
        return self._dealer

    def close(self) -> None:
        """Close the DEALER socket (frames not yet sent are dropped). Idempotent."""
        if self._dealer is not None:
            self._dealer.close(linger=0)
            self._dealer = None

    def send_frame(self, image: Image, stamp: float,
                   depth: NDArray[np.float32] | bytes | None = None,
                   right: Image | None = None, encoding: str = "jpeg",
                   depth_scale: float = DEFAULT_DEPTH_SCALE) -> int:
        """Queue one frame without waiting; its ``seq`` (see ``SlamClient.send_frame``)."""
        try:
            t = Stamp.from_seconds(float(stamp))
        except ProtocolError as exc:
            raise ClientError(str(exc)) from exc
        msg = IngestFrame(self._seq, t, encoding, encode_image(image, encoding))
        if encoding == "raw":
            msg.shape = tuple(np.shape(image))
        if depth is not None:
            msg.depth = encode_depth(depth, encoding, depth_scale)
            if encoding != "raw":
                msg.depth_scale = float(depth_scale)
        if right is not None:
            msg.right = encode_image(right, encoding)
        self._socket().send(msg.encode())
        self._seq += 1
        return self._seq - 1

    def replies(self, wait_s: float = 0.0) -> list[IngestReply]:
        """Replies received so far (waits up to ``wait_s`` for the first one)."""
        sock = self._socket()
        out: list[IngestReply] = []
        if not sock.poll(max(0, int(wait_s * 1000)), zmq.POLLIN):
            return out
        while True:
            try:
                data = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return out
            try:
                out.append(IngestReply.decode(data))
            except (ProtocolError, KeyError, TypeError, ValueError) as exc:
                log.warning("skipping a malformed ingest reply: %s", exc)

    def push_frame(self, image: Image, stamp: float,
                   depth: NDArray[np.float32] | bytes | None = None,
                   right: Image | None = None, encoding: str = "jpeg",
                   depth_scale: float = DEFAULT_DEPTH_SCALE) -> IngestReply:
        """Send one frame and wait for its reply (see ``SlamClient.push_frame``)."""
        seq = self.send_frame(image, stamp, depth, right, encoding, depth_scale)
        deadline = time.monotonic() + self.timeout_s
        while seq not in self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ClientTimeoutError(f"frame {seq}: no reply from {self.endpoint} "
                                         f"within {self.timeout_s:g} s")
            for reply in self.replies(min(remaining, POLL_MS / 1000)):
                self._pending[int(reply.seq)] = reply
        reply = self._pending.pop(seq)
        if not reply.ok and not reply.dropped:
            raise ServerError(str(reply.error), reply.to_dict())
        return reply

    def push_frames(self, frames: Iterable[FrameLike], rate_hz: float | None = None,
                    encoding: str = "jpeg", depth_scale: float = DEFAULT_DEPTH_SCALE,
                    max_in_flight: int | None = None) -> PushSummary:
        """Stream ``frames`` and collect one reply per frame (see ``SlamClient.push_frames``)."""
        summary = PushSummary()
        outstanding: dict[int, float] = {}  # seq -> time sent

        def collect(wait_s: float) -> None:
            for reply in self.replies(wait_s):
                sent_at = outstanding.pop(int(reply.seq), None)
                summary.replies.append(reply)
                summary.round_trip_ms.append(
                    float("nan") if sent_at is None else (time.monotonic() - sent_at) * 1e3)

        period = 1.0 / rate_hz if rate_hz else 0.0
        next_t = time.monotonic()
        for frame in frames:
            while max_in_flight is not None and len(outstanding) >= max_in_flight:
                before = len(outstanding)
                collect(self.timeout_s)
                if len(outstanding) == before:
                    raise ClientTimeoutError(
                        f"no reply from {self.endpoint} within {self.timeout_s:g} s")
            depth = getattr(frame, "depth_m", None)
            right = getattr(frame, "right", None)
            seq = self.send_frame(frame.image, frame.timestamp, depth, right, encoding,
                                  depth_scale)
            outstanding[seq] = time.monotonic()
            summary.sent += 1
            collect(0.0)
            if period:
                next_t += period
                time.sleep(max(0.0, next_t - time.monotonic()))  # pacing, not synchronising
        deadline = time.monotonic() + self.timeout_s
        while outstanding and time.monotonic() < deadline:
            collect(min(POLL_MS / 1000, max(0.0, deadline - time.monotonic())))
        summary.missing = len(outstanding)
        return summary

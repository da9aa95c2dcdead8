"""Python client of the SLAM service (ZeroMQ + msgpack, the schema of ``slam_protocol``).

Needs only ``zmq``, ``numpy``, the standard library and :mod:`slam_protocol` (OpenCV
is imported lazily, only to JPEG/PNG-compress pushed frames).

>>> with SlamClient("tcp://robot:5555", "tcp://robot:5556") as c:   # doctest: +SKIP
...     c.stats()["fps"]
...     for pose in c.subscribe("pose"):
...         print(pose.seq, pose.position)

One module per concern: :mod:`clients.connection` (the client's own ZeroMQ context
and its sockets), :mod:`clients.subscriptions` (one SUB per :meth:`SlamClient.subscribe`
stream; one SUB read by a small thread for :meth:`SlamClient.latest_pose`),
:mod:`clients.pushing` (one DEALER for pushed frames), :mod:`clients.images` (frame
encoding); here :class:`SlamClient` and its commands (one REQ, closed and re-created
after a timeout, so a lost reply never wedges it). A client is not thread-safe: give
each thread its own. :meth:`SlamClient.close` closes every socket (linger 0) and the
client's context.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import zmq
from numpy.typing import NDArray

from clients.connection import POLL_MS, Connection, wait_readable
from clients.errors import ClientError, ClientTimeoutError, ServerError
from clients.images import DEFAULT_DEPTH_SCALE, Image, encode_depth, encode_image
from clients.pushing import PUSH_SNDHWM, FrameLike, FramePusher, PushSummary
from clients.subscriptions import Subscriptions
from slam_protocol import (
    DEFAULT_CMD_ENDPOINT,
    DEFAULT_INGEST_ENDPOINT,
    DEFAULT_PUB_ENDPOINT,
    ENCODINGS,
    TOPIC_TYPES,
    Command,
    IngestReply,
    ProtocolError,
    Reply,
    decode,
    unpack_array,
)
from slam_protocol.curve import CurveClientKeys, CurveKeys, KeyFileError

__all__ = [
    "DEFAULT_CMD",
    "DEFAULT_DEPTH_SCALE",
    "DEFAULT_INGEST",
    "DEFAULT_PUB",
    "ENCODINGS",
    "PUSH_SNDHWM",
    "TOPIC_TYPES",
    "ClientError",
    "ClientTimeoutError",
    "CurveClientKeys",
    "CurveKeys",
    "FrameLike",
    "Image",
    "PushSummary",
    "ServerError",
    "SlamClient",
    "Snapshot",
    "encode_depth",
    "encode_image",
    "load_curve_keys",
]

DEFAULT_PUB: str = DEFAULT_PUB_ENDPOINT
DEFAULT_CMD: str = DEFAULT_CMD_ENDPOINT
DEFAULT_INGEST: str = DEFAULT_INGEST_ENDPOINT
DEFAULT_TIMEOUT_S = 5.0
"""How long a command or a pushed frame waits for its reply (s)."""
SAVE_POLL_S = POLL_MS / 1000
"""How often :meth:`SlamClient.save_map` with ``wait_s`` asks ``stats`` for the outcome (s)."""


def load_curve_keys(secret_file: str | Path, server_public_file: str | Path
                    ) -> CurveClientKeys:
    """The client's pair from its ``.key_secret`` file and the server's ``.key`` file
    (the files of ``slam keys generate``).

    :raises ClientError: a file is missing or malformed.
    """
    try:
        return CurveClientKeys.load(secret_file, server_public_file)
    except KeyFileError as exc:
        raise ClientError(f"cannot read CURVE keys: {exc}") from exc


@dataclass
class Snapshot:
    """The service's map and trajectory at one moment (``snapshot`` command).

    ``point_ids`` (N,) int64, ``xyz`` (N, 3) float32 metres in ``map``, ``rgb`` (N, 3)
    uint8; ``stamps`` (M,) float64 seconds, ``positions`` (M, 3) float32, ``orientations``
    (M, 4) float32 xyzw of the camera in ``map``; ``keyframes`` and ``loops`` as sent.
    """

    keyframes: list[dict[str, Any]]
    point_ids: NDArray[np.int64]
    xyz: NDArray[np.float32]
    rgb: NDArray[np.uint8]
    stamps: NDArray[np.float64]
    positions: NDArray[np.float32]
    orientations: NDArray[np.float32]
    loops: list[dict[str, Any]]
    last_seq: int


class SlamClient:
    """Talks to one SLAM service; see the module docstring.

    :param pub: PUB endpoint (poses, keyframes, map, loops, status, images).
    :param cmd: command (ROUTER) endpoint.
    :param ingest: ingestion (ROUTER) endpoint for pushed frames.
    :param curve: CURVE client keys or None (plain TCP).
    :param timeout_s: how long a command or a pushed frame waits for its reply (s).
    :param context: a ZeroMQ context to make the sockets in (its owner closes it); by
        default the client makes its own and destroys it in :meth:`close`.
    """

    def __init__(
        self,
        pub: str = DEFAULT_PUB,
        cmd: str = DEFAULT_CMD,
        ingest: str = DEFAULT_INGEST,
        curve: CurveKeys | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        if not timeout_s > 0:
            raise ClientError(f"timeout must be positive, got {timeout_s}")
        self.pub, self.cmd, self.ingest = pub, cmd, ingest
        self.curve, self.timeout_s = curve, float(timeout_s)
        self._conn = Connection(curve, context)
        self._req: zmq.Socket[Any] | None = None
        self._subscriptions = Subscriptions(self._conn, pub)
        self._pusher = FramePusher(self._conn, ingest, self.timeout_s)

    def close(self) -> None:
        """Close every socket (linger 0), subscription streams included, stop the
        latest-pose reader and destroy the client's own context (a ``context`` passed
        in stays open). Idempotent."""
        try:
            self._subscriptions.close()
            self._pusher.close()
            if self._req is not None:
                self._req.close(linger=0)
                self._req = None
        finally:
            self._conn.close()

    def __enter__(self) -> SlamClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------ subscribing
    def subscribe(
        self, *topics: str, timeout_s: float | None = None
    ) -> Generator[Any, None, None]:
        """Typed messages (``slam_protocol.PoseMsg`` ...) of ``topics`` (default: all), as
        they come; the subscription starts with this call.

        ``timeout_s``: raise :class:`ClientTimeoutError` after that long without a message
        (None: wait forever). Malformed messages are logged and skipped. The socket
        closes when the stream is closed, left early or garbage-collected, and at the
        latest when the client closes.

        :raises ClientError: an unknown topic.
        """
        return self._subscriptions.subscribe(topics, timeout_s)

    def latest_pose(self, wait_s: float = 0.0) -> Any:
        """The newest ``slam_protocol.PoseMsg`` received so far, or None; returns at once.

        The first call starts a reader thread that keeps only the newest pose, so no
        backlog ever builds up however rarely this is called. ``wait_s`` > 0 waits
        that long for a first pose when none is known yet (the subscription needs a
        moment to connect after the first call).
        """
        return self._subscriptions.latest_pose(wait_s)

    # --------------------------------------------------------------- commands
    def command(self, cmd: str, **fields: Any) -> dict[str, Any]:
        """Send ``{v, cmd, **fields}``; the reply's fields (no ``v``/``ok``) when ``ok``,
        else :class:`ServerError` with the service's error string.

        Raises :class:`ClientTimeoutError` after ``timeout_s`` (the REQ socket is then
        closed and the next command opens a fresh one).
        """
        if self._req is None:
            self._req = self._conn.socket(zmq.REQ, self.cmd)
        sock = self._req
        try:
            sock.send(Command(cmd, fields).encode())
            wait_readable(sock, self.timeout_s, f"{cmd}: no reply from {self.cmd}")
            data = bytes(sock.recv())
        except BaseException:
            sock.close(linger=0)  # a REQ socket waiting for a lost reply is stuck: renew it
            self._req = None
            raise
        try:
            raw = decode(data)
            reply = Reply.from_dict(raw)
        except ProtocolError as exc:
            raise ClientError(f"malformed reply to {cmd}: {exc}") from exc
        if not reply.ok:
            raise ServerError(str(reply.error), raw)
        return reply.fields

    def stats(self) -> dict[str, Any]:
        """Counters of the service: frames, tracked_frames, fps, keyframes, map_points, ..."""
        return self.command("stats")

    def snapshot(self) -> Snapshot:
        """The whole current map and trajectory (for late subscribers)."""
        r = self.command("snapshot")
        try:
            points, traj = r["points"], r["trajectory"]
            return Snapshot(
                keyframes=list(r.get("keyframes", [])),
                point_ids=unpack_array(points["ids"], np.int64, ()),
                xyz=unpack_array(points["xyz"], np.float32, (3,)),
                rgb=unpack_array(points["rgb"], np.uint8, (3,)),
                stamps=unpack_array(traj["stamps"], np.float64, ()),
                positions=unpack_array(traj["positions"], np.float32, (3,)),
                orientations=unpack_array(traj["orientations"], np.float32, (4,)),
                loops=list(r.get("loops", [])),
                last_seq=int(r.get("last_seq", -1)),
            )
        except (KeyError, TypeError, ValueError, ProtocolError) as exc:
            raise ClientError(f"malformed snapshot reply: {exc}") from exc

    def pause(self) -> None:
        """Stop taking frames from the source (the map stays)."""
        self.command("pause")

    def resume(self) -> None:
        """Take frames again after :meth:`pause`."""
        self.command("resume")

    def reset(self) -> None:
        """Drop the map and start a new, empty one."""
        self.command("reset")

    def save_map(self, name: str, wait_s: float | None = None) -> dict[str, Any]:
        """Save the map as ``name`` in the server's map directory (a name such as
        ``office``, never a path). The server saves in the background and replies at
        once ``{name, state: "saving"}``; with ``wait_s``, wait up to that many seconds
        for the outcome (``stats``' ``map_save``: ``{name, state: "saved", bytes,
        seconds}``). Raises :class:`ServerError` when the save is refused or fails,
        :class:`ClientTimeoutError` when it is not done within ``wait_s``."""
        reply = self.command("save_map", name=str(name))
        if wait_s is None:
            return reply
        deadline = time.monotonic() + wait_s
        while True:
            status = self.stats().get("map_save") or {}
            if status.get("name") == reply.get("name") and status.get("state") != "saving":
                if status.get("state") != "saved":
                    raise ServerError(f"save_map failed: {status.get('error')}", status)
                return dict(status)
            if time.monotonic() >= deadline:
                raise ClientTimeoutError(f"save_map: {name!r} not saved within {wait_s:g} s")
            time.sleep(min(SAVE_POLL_S, max(deadline - time.monotonic(), 0.0)))

    def load_map(self, name: str) -> dict[str, Any]:
        """Replace the map by map ``name`` of the server's map directory; reply
        ``{name, keyframes, map_points}``."""
        return self.command("load_map", name=str(name))

    def list_maps(self) -> list[dict[str, Any]]:
        """The maps of the server's map directory: ``[{name, bytes, modified}, ...]``."""
        return list(self.command("list_maps").get("maps", []))

    def shutdown(self) -> None:
        """Ask the service to exit cleanly."""
        self.command("shutdown")

    # ---------------------------------------------------------------- pushing
    def send_frame(
        self,
        image: Image,
        stamp: float,
        depth: NDArray[np.float32] | bytes | None = None,
        right: Image | None = None,
        encoding: str = "jpeg",
        depth_scale: float = DEFAULT_DEPTH_SCALE,
    ) -> int:
        """Queue one frame for the service without waiting; returns its ``seq``.

        ``image`` (H, W) grey or (H, W, 3) BGR uint8 (or bytes already encoded);
        ``stamp`` seconds; ``depth`` (H, W) metres; ``right`` (H, W) uint8. The reply
        comes later (:meth:`replies`).
        """
        return self._pusher.send_frame(image, stamp, depth, right, encoding, depth_scale)

    def replies(self, wait_s: float = 0.0) -> list[IngestReply]:
        """``slam_protocol.IngestReply`` of pushed frames received so far (waits up to
        ``wait_s`` for the first one when none is there)."""
        return self._pusher.replies(wait_s)

    def push_frame(
        self,
        image: Image,
        stamp: float,
        depth: NDArray[np.float32] | bytes | None = None,
        right: Image | None = None,
        encoding: str = "jpeg",
        depth_scale: float = DEFAULT_DEPTH_SCALE,
    ) -> IngestReply:
        """Send one frame and wait for its ``slam_protocol.IngestReply`` (pose once tracked).

        Raises :class:`ServerError` when the service rejects the frame (``dropped``
        frames are answered with ``dropped`` true, not raised), :class:`ClientTimeoutError`
        after ``timeout_s``.
        """
        return self._pusher.push_frame(image, stamp, depth, right, encoding, depth_scale)

    def push_frames(
        self,
        frames: Iterable[FrameLike],
        rate_hz: float | None = None,
        encoding: str = "jpeg",
        depth_scale: float = DEFAULT_DEPTH_SCALE,
        max_in_flight: int | None = None,
    ) -> PushSummary:
        """Stream ``frames`` (SensorFrame-like) and collect one reply per frame.

        ``rate_hz``: send at that rate (None: as fast as ``max_in_flight`` allows).
        ``max_in_flight``: at most that many frames without a reply (None: no limit;
        the service then drops the oldest queued frames and says so). After the last
        frame, waits up to ``timeout_s`` for the outstanding replies.
        """
        return self._pusher.push_frames(frames, rate_hz, encoding, depth_scale, max_in_flight)

"""Python client of the SLAM service (ZeroMQ + msgpack, schema of ``server.protocol``).

Needs only ``zmq``, ``numpy``, the standard library and :mod:`server.protocol`
(OpenCV is imported lazily, only to JPEG/PNG-compress pushed frames).

>>> with SlamClient("tcp://robot:5555", "tcp://robot:5556") as c:   # doctest: +SKIP
...     c.stats()["fps"]
...     for pose in c.subscribe("pose"):
...         print(pose.seq, pose.position)

Sockets: one SUB per :meth:`subscribe` iterator, one SUB for :meth:`latest_pose`
read by a small thread that keeps only the newest pose (CONFLATE cannot be used:
messages are two frames, topic and body), one REQ for commands (closed and
re-created after a timeout, so a lost reply never wedges it) and one DEALER for
pushed frames. A client is not thread-safe: give each thread its own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

import numpy as np
import zmq
from numpy.typing import NDArray

from server import protocol

log = logging.getLogger(__name__)
# Frames a pusher lets ZeroMQ queue before send_frame blocks: a camera pushing faster
# than the service takes frames is slowed down here instead of building seconds of
# backlog (the service keeps only the freshest frames anyway).
PUSH_SNDHWM = 4

DEFAULT_PUB: str = protocol.DEFAULT_PUB_ENDPOINT
DEFAULT_CMD: str = protocol.DEFAULT_CMD_ENDPOINT
DEFAULT_INGEST: str = protocol.DEFAULT_INGEST_ENDPOINT
ENCODINGS: tuple[str, ...] = protocol.ENCODINGS
DEFAULT_DEPTH_SCALE = 5000.0  # PNG depth units per metre, as TUM
_POLL_MS = 100  # granularity of blocking waits, so Ctrl-C is seen


class ClientError(Exception):
    """Base of the client's errors."""


class ClientTimeoutError(ClientError, TimeoutError):
    """The service did not answer within the client's timeout."""


class ServerError(ClientError):
    """The service answered ``ok: false``; ``error`` is its message, ``reply`` the whole map."""

    def __init__(self, error: str, reply: dict[str, Any] | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.reply = reply or {}


class CurveKeys(Protocol):
    """CURVE client keys (Z85 bytes or str): the server's public key and our key pair."""

    @property
    def server_public(self) -> bytes | str: ...
    @property
    def public(self) -> bytes | str: ...
    @property
    def secret(self) -> bytes | str: ...


@dataclass(frozen=True)
class CurveClientKeyFiles:
    """CURVE keys read from the files of ``slam keys generate`` (z85 bytes)."""

    public: bytes
    secret: bytes
    server_public: bytes


def load_curve_keys(secret_file: str, server_public_file: str) -> CurveClientKeyFiles:
    """The client's pair from its ``.key_secret`` file and the server's ``.key`` file."""
    import zmq.auth

    try:
        public, secret = zmq.auth.load_certificate(secret_file)
        server_public, _ = zmq.auth.load_certificate(server_public_file)
    except (OSError, ValueError) as exc:
        raise ClientError(f"cannot read CURVE keys: {exc}") from exc
    if not secret:
        raise ClientError(f"{secret_file} holds no secret key (pass the .key_secret file)")
    return CurveClientKeyFiles(public, secret, server_public)


class FrameLike(Protocol):
    """What :meth:`SlamClient.push_frames` reads: ``image`` (H, W) uint8 (or encoded
    bytes), ``timestamp`` seconds; optional ``depth_m`` (H, W) float32 metres and
    ``right`` (H, W) uint8 (a :class:`slam.io.types.SensorFrame` fits)."""

    @property
    def image(self) -> Image: ...
    @property
    def timestamp(self) -> float: ...


TOPIC_TYPES: dict[str, Any] = {
    protocol.TOPIC_POSE: protocol.PoseMsg,
    protocol.TOPIC_KEYFRAME: protocol.KeyframeMsg,
    protocol.TOPIC_MAP: protocol.MapUpdateMsg,
    protocol.TOPIC_LOOP: protocol.LoopMsg,
    protocol.TOPIC_STATUS: protocol.StatusMsg,
    protocol.TOPIC_IMAGE: protocol.ImageMsg,
}
"""Topic name -> message class of :mod:`server.protocol` (``from_dict``/``to_dict``)."""


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


@dataclass
class PushSummary:
    """Replies of :meth:`SlamClient.push_frames`, in arrival order; ``missing`` frames got
    none. ``round_trip_ms`` (one per reply, same order): from sending the frame to
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


def _apply_curve(sock: zmq.Socket[Any], curve: CurveKeys | None) -> None:
    if curve is not None:
        sock.curve_serverkey = _as_bytes(curve.server_public)
        sock.curve_publickey = _as_bytes(curve.public)
        sock.curve_secretkey = _as_bytes(curve.secret)


def _as_bytes(key: bytes | str) -> bytes:
    return key.encode("ascii") if isinstance(key, str) else key


Image = NDArray[np.uint8] | bytes
"""An (H, W) grey or (H, W, 3) BGR uint8 array, or bytes already in the frame's encoding."""


def encode_image(image: Image, encoding: str) -> bytes:
    """Bytes of an (H, W) grey or (H, W, 3) BGR uint8 image in ``encoding``.

    ``bytes`` pass through untouched (a JPEG straight from an MJPEG camera, say);
    ``raw`` needs an array (its shape travels with it).
    """
    if encoding not in ENCODINGS:
        raise ClientError(f"unknown encoding {encoding!r}; use one of {', '.join(ENCODINGS)}")
    if isinstance(image, bytes | bytearray | memoryview):
        if encoding == "raw":
            raise ClientError("raw frames must be arrays (their shape is sent with them)")
        return bytes(image)
    a = np.ascontiguousarray(image)
    if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3):
        raise ClientError(f"image must be (H, W) or (H, W, 3) uint8, got {a.dtype} {a.shape}")
    if encoding == "raw":
        return a.tobytes()
    import cv2  # only to compress

    ok, buf = cv2.imencode(".jpg" if encoding == "jpeg" else ".png", a)
    if not ok:
        raise ClientError(f"OpenCV could not {encoding}-encode a {a.shape} image")
    return bytes(buf)


def encode_depth(depth_m: NDArray[np.float32] | bytes, encoding: str, depth_scale: float
                 ) -> bytes:
    """Depth (H, W) metres: raw float32 for ``raw``, else a 16-bit PNG of metres*scale
    (``bytes`` pass through: an already encoded PNG of ``depth_scale`` units per metre)."""
    if isinstance(depth_m, bytes | bytearray | memoryview):
        if encoding == "raw":
            raise ClientError("raw depth must be an array")
        return bytes(depth_m)
    d = np.nan_to_num(np.asarray(depth_m, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if d.ndim != 2:
        raise ClientError(f"depth must be (H, W), got {d.shape}")
    if encoding == "raw":
        return np.ascontiguousarray(d, dtype="<f4").tobytes()
    import cv2

    units = np.clip(np.round(d * depth_scale), 0, 65535).astype(np.uint16)
    ok, buf = cv2.imencode(".png", units)
    if not ok:
        raise ClientError("OpenCV could not PNG-encode the depth image")
    return bytes(buf)


class _LatestPose:
    """A thread that reads a ``pose`` SUB socket (which it alone uses) and keeps the
    newest payload; :meth:`get` decodes it once."""

    def __init__(self, sock: zmq.Socket[Any]) -> None:
        self._sock = sock
        self._lock = threading.Lock()
        self._arrived = threading.Event()
        self._stop = threading.Event()
        self._payload: bytes | None = None
        self._msg: Any = None
        self._thread = threading.Thread(target=self._run, name="slam-latest-pose", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if not self._sock.poll(_POLL_MS, zmq.POLLIN):
                    continue
                frames = self._sock.recv_multipart()
                if len(frames) == 2 and frames[0] == protocol.TOPIC_POSE.encode():
                    with self._lock:
                        self._payload = frames[1]
                    self._arrived.set()
        except zmq.ZMQError as exc:  # context terminated under us
            log.debug("latest-pose reader stopped: %s", exc)
        finally:
            self._sock.close(linger=0)

    def get(self, wait_s: float) -> Any:
        if wait_s > 0 and self._msg is None:
            self._arrived.wait(wait_s)
        with self._lock:
            payload, self._payload = self._payload, None
        if payload is not None:
            msg = SlamClient._typed([protocol.TOPIC_POSE.encode(), payload], (protocol.TOPIC_POSE,))
            if msg is not None:
                self._msg = msg
        return self._msg

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2 * _POLL_MS / 1000 + 1.0)


class SlamClient:
    """Talks to one SLAM service; see the module docstring.

    :param pub: PUB endpoint (poses, keyframes, map, loops, status, images).
    :param cmd: command (ROUTER) endpoint.
    :param ingest: ingestion (ROUTER) endpoint for pushed frames.
    :param curve: CURVE client keys or None (plain TCP).
    :param timeout_s: how long a command or a pushed frame waits for its reply.
    """

    def __init__(
        self,
        pub: str = DEFAULT_PUB,
        cmd: str = DEFAULT_CMD,
        ingest: str = DEFAULT_INGEST,
        curve: CurveKeys | None = None,
        timeout_s: float = 5.0,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        if not timeout_s > 0:
            raise ClientError(f"timeout must be positive, got {timeout_s}")
        self.pub, self.cmd, self.ingest = pub, cmd, ingest
        self.curve, self.timeout_s = curve, float(timeout_s)
        self._ctx = context or zmq.Context.instance()
        self._req: zmq.Socket[Any] | None = None
        self._dealer: zmq.Socket[Any] | None = None
        self._watcher: _LatestPose | None = None
        self._push_seq = 0
        self._pending: dict[int, Any] = {}

    # ----------------------------------------------------------------- sockets
    def _socket(self, kind: int, endpoint: str, sndhwm: int | None = None) -> zmq.Socket[Any]:
        sock = self._ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        if sndhwm is not None:
            sock.setsockopt(zmq.SNDHWM, sndhwm)
        _apply_curve(sock, self.curve)  # options before connect
        sock.connect(endpoint)
        return sock

    def _sub(self, topics: Iterable[str], hwm: int = 1000) -> zmq.Socket[Any]:
        sock = self._ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, hwm)
        _apply_curve(sock, self.curve)
        for topic in topics:
            sock.setsockopt(zmq.SUBSCRIBE, topic.encode("ascii"))
        sock.connect(self.pub)
        return sock

    def close(self) -> None:
        """Close every socket (the shared context stays)."""
        for sock in (self._req, self._dealer):
            if sock is not None:
                sock.close(linger=0)
        if self._watcher is not None:
            self._watcher.stop()
        self._req = self._dealer = self._watcher = None

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
        """Typed messages (``protocol.PoseMsg`` ...) of ``topics`` (default: all), as they come.

        ``timeout_s``: raise :class:`ClientTimeoutError` after that long without a message
        (None: wait forever). Malformed messages are logged and skipped. The
        socket closes when the iterator is closed or garbage-collected.
        """
        names = topics or tuple(TOPIC_TYPES)
        unknown = [t for t in names if t not in TOPIC_TYPES]
        if unknown:
            raise ClientError(f"unknown topic {unknown[0]!r}; use {', '.join(TOPIC_TYPES)}")
        sock = self._sub(names)
        try:
            while True:
                frames = self._recv_multipart(sock, timeout_s)
                msg = self._typed(frames, names)
                if msg is not None:
                    yield msg
        finally:
            sock.close(linger=0)

    def _recv_multipart(self, sock: zmq.Socket[Any], timeout_s: float | None) -> list[bytes]:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            wait_ms = _POLL_MS
            if deadline is not None:
                wait_ms = min(_POLL_MS, max(0, int((deadline - time.monotonic()) * 1000)))
            if sock.poll(wait_ms, zmq.POLLIN):
                return list(sock.recv_multipart())
            if deadline is not None and time.monotonic() >= deadline:
                raise ClientTimeoutError(f"no message from {self.pub} within {timeout_s} s")

    @staticmethod
    def _typed(frames: list[bytes], topics: Iterable[str]) -> Any:
        if len(frames) != 2:
            log.warning("skipping a message of %d frames (want topic + body)", len(frames))
            return None
        topic = frames[0].decode("ascii", errors="replace")
        if topic not in topics:  # SUBSCRIBE matches prefixes
            return None
        try:
            return TOPIC_TYPES[topic].from_dict(protocol.decode(frames[1]))
        except (protocol.ProtocolError, KeyError, TypeError, ValueError) as exc:
            log.warning("skipping a malformed %s message: %s", topic, exc)
            return None

    def latest_pose(self, wait_s: float = 0.0) -> Any:
        """The newest ``protocol.PoseMsg`` received so far, or None; returns at once.

        The first call starts a reader thread that keeps only the newest pose, so no
        backlog ever builds up however rarely this is called. ``wait_s`` > 0 waits
        that long for a first pose when none is known yet (the subscription needs a
        moment to connect after the first call).
        """
        if self._watcher is None:
            self._watcher = _LatestPose(self._sub(["pose"], hwm=100))
        return self._watcher.get(wait_s)

    # --------------------------------------------------------------- commands
    def command(self, cmd: str, **fields: Any) -> dict[str, Any]:
        """Send ``{v, cmd, **fields}``; the reply's fields (no ``v``/``ok``) when ``ok``,
        else :class:`ServerError` with the service's error string.

        Raises :class:`ClientTimeoutError` after ``timeout_s`` (the REQ socket is then
        closed and the next command opens a fresh one).
        """
        if self._req is None:
            self._req = self._socket(zmq.REQ, self.cmd)
        sock = self._req
        try:
            sock.send(protocol.encode(protocol.Command(cmd, fields).to_dict()))
            data = self._recv_reply(sock, cmd)
        except BaseException:
            sock.close(linger=0)  # a REQ socket waiting for a lost reply is stuck: renew it
            self._req = None
            raise
        try:
            raw = protocol.decode(data)
            reply = protocol.Reply.from_dict(raw)
        except protocol.ProtocolError as exc:
            raise ClientError(f"malformed reply to {cmd}: {exc}") from exc
        if not reply.ok:
            raise ServerError(str(reply.error), raw)
        return reply.fields

    def _recv_reply(self, sock: zmq.Socket[Any], cmd: str) -> bytes:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            wait_ms = min(_POLL_MS, max(1, int((deadline - time.monotonic()) * 1000)))
            if sock.poll(wait_ms, zmq.POLLIN):
                return bytes(sock.recv())
        raise ClientTimeoutError(f"{cmd}: no reply from {self.cmd} within {self.timeout_s:g} s")

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
                point_ids=protocol.unpack_array(points["ids"], np.int64, ()),
                xyz=protocol.unpack_array(points["xyz"], np.float32, (3,)),
                rgb=protocol.unpack_array(points["rgb"], np.uint8, (3,)),
                stamps=protocol.unpack_array(traj["stamps"], np.float64, ()),
                positions=protocol.unpack_array(traj["positions"], np.float32, (3,)),
                orientations=protocol.unpack_array(traj["orientations"], np.float32, (4,)),
                loops=list(r.get("loops", [])),
                last_seq=int(r.get("last_seq", -1)),
            )
        except (KeyError, TypeError, ValueError, protocol.ProtocolError) as exc:
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
            time.sleep(min(_POLL_MS / 1000, max(deadline - time.monotonic(), 0.0)))

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
    def _ingest_socket(self) -> zmq.Socket[Any]:
        if self._dealer is None:
            self._dealer = self._socket(zmq.DEALER, self.ingest, sndhwm=PUSH_SNDHWM)
        return self._dealer

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
        msg: dict[str, Any] = {
            "v": protocol.SCHEMA_VERSION,
            "seq": self._push_seq,
            "stamp": protocol.stamp_from_seconds(float(stamp)),
            "encoding": encoding,
            "image": encode_image(image, encoding),
        }
        if encoding == "raw":
            msg["shape"] = list(np.shape(image))
        if depth is not None:
            msg["depth"] = encode_depth(depth, encoding, depth_scale)
            if encoding != "raw":
                msg["depth_scale"] = float(depth_scale)
        if right is not None:
            msg["right"] = encode_image(right, encoding)
        self._ingest_socket().send(protocol.encode(msg))
        self._push_seq += 1
        return self._push_seq - 1

    def replies(self, wait_s: float = 0.0) -> list[Any]:
        """``protocol.IngestReply`` of pushed frames received so far (waits up to
        ``wait_s`` for the first one when none is there)."""
        sock = self._ingest_socket()
        out: list[Any] = []
        if not sock.poll(max(0, int(wait_s * 1000)), zmq.POLLIN):
            return out
        while True:
            try:
                data = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return out
            try:
                out.append(protocol.IngestReply.from_dict(protocol.decode(data)))
            except (protocol.ProtocolError, KeyError, TypeError, ValueError) as exc:
                log.warning("skipping a malformed ingest reply: %s", exc)

    def push_frame(
        self,
        image: Image,
        stamp: float,
        depth: NDArray[np.float32] | bytes | None = None,
        right: Image | None = None,
        encoding: str = "jpeg",
        depth_scale: float = DEFAULT_DEPTH_SCALE,
    ) -> Any:
        """Send one frame and wait for its ``protocol.IngestReply`` (pose once tracked).

        Raises :class:`ServerError` when the service rejects the frame (``dropped``
        frames are answered with ``dropped`` true, not raised), :class:`ClientTimeoutError`
        after ``timeout_s``.
        """
        seq = self.send_frame(image, stamp, depth, right, encoding, depth_scale)
        deadline = time.monotonic() + self.timeout_s
        while seq not in self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ClientTimeoutError(f"frame {seq}: no reply from {self.ingest} "
                                    f"within {self.timeout_s:g} s")
            for reply in self.replies(min(remaining, _POLL_MS / 1000)):
                self._pending[int(reply.seq)] = reply
        reply = self._pending.pop(seq)
        if not reply.ok and not getattr(reply, "dropped", False):
            raise ServerError(str(reply.error), reply.to_dict())
        return reply

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
                        f"no reply from {self.ingest} within {self.timeout_s:g} s"
                    )
            depth = getattr(frame, "depth_m", None)
            right = getattr(frame, "right", None)
            seq = self.send_frame(frame.image, frame.timestamp, depth, right, encoding, depth_scale)
            outstanding[seq] = time.monotonic()
            summary.sent += 1
            collect(0.0)
            if period:
                next_t += period
                time.sleep(max(0.0, next_t - time.monotonic()))
        deadline = time.monotonic() + self.timeout_s
        while outstanding and time.monotonic() < deadline:
            collect(min(_POLL_MS / 1000, max(0.0, deadline - time.monotonic())))
        summary.missing = len(outstanding)
        return summary


"""Subscriptions to the service's PUB socket: typed message streams and the newest pose.

One SUB socket per :meth:`Subscriptions.subscribe` stream, closed when the stream is
closed, garbage-collected, or left early (``break`` out of a ``for``), or at the latest
when the client closes. :meth:`Subscriptions.latest_pose` reads its own SUB socket in a
small thread that keeps only the newest pose (CONFLATE cannot be used: messages are two
frames, topic and body).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Generator, Iterable
from typing import Any

import zmq

from clients.connection import POLL_MS, Connection, wait_readable
from clients.errors import ClientError
from slam_protocol import TOPIC_POSE, TOPIC_TYPES, Message, ProtocolError, decode

log = logging.getLogger(__name__)

SUB_RCVHWM = 1000
"""Messages a subscription stream lets ZeroMQ queue before dropping (a slow reader)."""
LATEST_POSE_RCVHWM = 100
"""Poses the latest-pose reader lets queue (it reads them all, keeping the newest)."""
READER_JOIN_S = 1.0 + 2 * POLL_MS / 1000
"""How long closing waits for the latest-pose reader thread to end (s)."""


def typed_message(frames: list[bytes], topics: Iterable[str]) -> Message | None:
    """The typed message of a two-frame PUB message ``[topic, body]`` of ``topics``, or
    None (another topic, or malformed: logged and skipped)."""
    if len(frames) != 2:
        log.warning("skipping a message of %d frames (want topic + body)", len(frames))
        return None
    topic = frames[0].decode("ascii", errors="replace")
    if topic not in topics:  # SUBSCRIBE matches prefixes
        return None
    try:
        return TOPIC_TYPES[topic].from_dict(decode(frames[1]))
    except (ProtocolError, KeyError, TypeError, ValueError) as exc:
        log.warning("skipping a malformed %s message: %s", topic, exc)
        return None


class _LatestPose:
    """A thread that reads a ``pose`` SUB socket (which it alone uses, and closes) and
    keeps the newest payload; :meth:`get` decodes it once."""

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
                if not self._sock.poll(POLL_MS, zmq.POLLIN):
                    continue
                frames = self._sock.recv_multipart()
                if len(frames) == 2 and frames[0] == TOPIC_POSE.encode():
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
            msg = typed_message([TOPIC_POSE.encode(), payload], (TOPIC_POSE,))
            if msg is not None:
                self._msg = msg
        return self._msg

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(READER_JOIN_S)


class Subscriptions:
    """The subscriptions of one client to the PUB socket at ``endpoint``."""

    def __init__(self, connection: Connection, endpoint: str) -> None:
        self._conn = connection
        self.endpoint = endpoint
        self._streams: weakref.WeakSet[Generator[Any, None, None]] = weakref.WeakSet()
        self._sockets: set[zmq.Socket[Any]] = set()
        self._latest: _LatestPose | None = None

    def subscribe(self, topics: tuple[str, ...], timeout_s: float | None
                  ) -> Generator[Any, None, None]:
        """A stream of typed messages of ``topics`` (all when empty); the SUB socket
        connects now, so messages published after this call reach the stream.

        :raises ClientError: an unknown topic (at once).
        """
        names = topics or tuple(TOPIC_TYPES)
        unknown = [t for t in names if t not in TOPIC_TYPES]
        if unknown:
            raise ClientError(f"unknown topic {unknown[0]!r}; use {', '.join(TOPIC_TYPES)}")
        sock = self._conn.socket(zmq.SUB, self.endpoint, rcvhwm=SUB_RCVHWM, subscribe=names)
        self._sockets.add(sock)
        stream = self._stream(sock, names, timeout_s)
        self._streams.add(stream)
        return stream

    def _stream(self, sock: zmq.Socket[Any], names: tuple[str, ...], timeout_s: float | None
                ) -> Generator[Any, None, None]:
        try:
            while True:
                wait_readable(sock, timeout_s, f"no message from {self.endpoint}")
                msg = typed_message(list(sock.recv_multipart()), names)
                if msg is not None:
                    yield msg
        finally:
            self._release(sock)

    def _release(self, sock: zmq.Socket[Any]) -> None:
        self._sockets.discard(sock)
        sock.close(linger=0)

    def latest_pose(self, wait_s: float) -> Any:
        """The newest pose received so far, or None (see ``SlamClient.latest_pose``)."""
        if self._latest is None:
            sock = self._conn.socket(zmq.SUB, self.endpoint, rcvhwm=LATEST_POSE_RCVHWM,
                                     subscribe=(TOPIC_POSE,))
            self._latest = _LatestPose(sock)
        return self._latest.get(wait_s)

    def close(self) -> None:
        """Close every stream and socket and stop the latest-pose reader. Idempotent."""
        for stream in list(self._streams):
            try:
                stream.close()  # runs the stream's finally: its socket closes
            except ValueError:  # running in another thread: its socket closes below
                log.debug("a subscription stream was running while its client closed")
        for sock in list(self._sockets):  # streams never started
            self._release(sock)
        if self._latest is not None:
            self._latest.stop()
            self._latest = None

"""A ROUTER socket served by one thread: the common part of the command and the
ingestion sockets.

Each request is one message body after the routing envelope (REQ clients add an
empty delimiter frame, DEALER clients may or may not); the reply goes back with
the same envelope. Anything unreadable gets an error reply; replies to a client
that went away are dropped by ZeroMQ, so a killed client disturbs nobody.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import zmq

log = logging.getLogger(__name__)

POLL_MS = 50
MAX_BATCH = 64  # messages handled per poll wake-up before other sockets get a turn


def split_envelope(frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """(routing envelope, body frames) of a message received on a ROUTER socket.

    The envelope is the sender identity plus everything up to the first empty
    delimiter frame when there is one (REQ), else the identity alone (DEALER).
    """
    identity, rest = frames[:1], frames[1:]
    if b"" in rest:
        k = rest.index(b"")
        return identity + rest[: k + 1], rest[k + 1:]
    return identity, rest


class RouterServer:
    """Bind a ROUTER socket and serve it on a thread until :meth:`stop`.

    Subclasses implement :meth:`handle` (one body in, one reply body or None out)
    and :meth:`error_reply`; extra sockets polled by the same thread are added by
    :meth:`_extra_sockets` and served by :meth:`_on_extra`.
    """

    name = "router"
    close_linger_ms = 0

    def __init__(self, ctx: zmq.Context[Any], endpoint: str, max_bytes: int,
                 setup: Any = None, rcvhwm: int | None = None) -> None:
        self.max_bytes = max_bytes
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if rcvhwm is not None:
            self.sock.setsockopt(zmq.RCVHWM, rcvhwm)
        # Bigger than the protocol limit so that an oversize request still gets an
        # error reply; far bigger ones cost the sender its connection.
        self.sock.setsockopt(zmq.MAXMSGSIZE, 2 * max_bytes + 4096)
        try:
            if setup is not None:
                setup(self.sock)
            self.sock.bind(endpoint)
        except zmq.ZMQError:
            self.sock.close(linger=0)
            raise
        self.endpoint: str = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.requests = 0
        self.bad_requests = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"slam-{self.name}",
                                        daemon=True)

    # --- to implement ---------------------------------------------------------
    def handle(self, envelope: list[bytes], body: bytes) -> bytes | None:
        """The reply body to one request (None: the reply is sent later)."""
        raise NotImplementedError

    def error_reply(self, message: str) -> bytes:
        """The reply body saying that a request was refused."""
        raise NotImplementedError

    def _extra_sockets(self) -> list[zmq.Socket[Any]]:
        return []

    def _on_extra(self, sock: zmq.Socket[Any]) -> None:
        return None

    # --- the thread -----------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and close the sockets (idempotent).

        A running thread closes its sockets itself as it ends (a ZeroMQ socket belongs
        to the thread that uses it); a thread never started, or already ended, leaves
        them to this call. A thread stuck past ``timeout`` in a handler still closes
        them when the handler returns; the owner's ``ctx.destroy(linger=0)`` is the
        last resort.
        """
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("%s thread did not stop within %.1f s; it closes its sockets "
                        "when its handler returns", self.name, timeout)
            return
        self._close_sockets()

    def _close_sockets(self) -> None:
        for sock in [self.sock, *self._extra_sockets()]:
            sock.close(linger=self.close_linger_ms if sock is self.sock else 0)

    def send(self, envelope: list[bytes], body: bytes) -> None:
        """Send a reply (from the server thread only); a gone client's reply is dropped."""
        try:
            self.sock.send_multipart([*envelope, body], flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.debug("%s: reply dropped: %s", self.name, exc)

    def _run(self) -> None:
        try:
            self._serve()
        finally:
            self._close_sockets()

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        for extra in self._extra_sockets():
            poller.register(extra, zmq.POLLIN)
        while not self._stop.is_set():
            try:
                ready = dict(poller.poll(POLL_MS))
                for extra in self._extra_sockets():
                    if extra in ready:
                        self._drain(extra, self._on_extra)
                if self.sock in ready:
                    self._drain(self.sock, self._on_request)
            except Exception:  # never let one message end the service
                log.exception("%s: unexpected error (served on)", self.name)

    def _drain(self, sock: zmq.Socket[Any], serve: Any) -> None:
        for _ in range(MAX_BATCH):
            if not sock.poll(0, zmq.POLLIN):
                return
            serve(sock)

    def _on_request(self, sock: zmq.Socket[Any]) -> None:
        frames = sock.recv_multipart(flags=zmq.NOBLOCK)
        self.requests += 1
        envelope, bodies = split_envelope(frames)
        if len(bodies) != 1:
            self.bad_requests += 1
            self.send(envelope, self.error_reply(
                f"expected one message frame after the routing envelope, got {len(bodies)}"))
            return
        try:
            reply = self.handle(envelope, bodies[0])
        except Exception as exc:
            log.exception("%s: request failed", self.name)
            reply = self.error_reply(f"internal error: {type(exc).__name__}: {exc}")
        if reply is not None:
            self.send(envelope, reply)

"""One client's ZeroMQ context and the sockets it makes: options set before connecting,
CURVE keys applied, ``linger`` 0, and closed again if connecting fails.

A :class:`Connection` owns its context (never the process-global
``zmq.Context.instance()``) unless given one, and :meth:`Connection.close` destroys
what it owns, so a client leaves no socket or context behind on any path.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import zmq

from clients.errors import ClientError, ClientTimeoutError
from slam_protocol.curve import CurveKeys, apply_client_keys

POLL_MS = 100
"""Granularity of every blocking wait (ms), so that Ctrl-C is seen promptly."""


class Connection:
    """Makes the sockets of one client.

    :param curve: CURVE client keys, or None for plain TCP.
    :param context: a ZeroMQ context to use (the caller then owns it), or None for a
        context of our own, destroyed by :meth:`close`.
    """

    def __init__(self, curve: CurveKeys | None = None,
                 context: zmq.Context[Any] | None = None) -> None:
        self.curve = curve
        self._owned = context is None
        self._ctx: zmq.Context[Any] = zmq.Context() if context is None else context

    def socket(self, kind: int, endpoint: str, *, sndhwm: int | None = None,
               rcvhwm: int | None = None, subscribe: Iterable[str] = ()) -> zmq.Socket[Any]:
        """A socket of ``kind`` connected to ``endpoint`` (``subscribe``: SUB topics).

        :raises ClientError: the endpoint is malformed or the socket cannot be made.
        """
        try:
            sock = self._ctx.socket(kind)
        except zmq.ZMQError as exc:
            raise ClientError(f"cannot open a socket: {exc}") from exc
        try:
            sock.setsockopt(zmq.LINGER, 0)
            if sndhwm is not None:
                sock.setsockopt(zmq.SNDHWM, sndhwm)
            if rcvhwm is not None:
                sock.setsockopt(zmq.RCVHWM, rcvhwm)
            apply_client_keys(sock, self.curve)  # options before connect
            for topic in subscribe:
                sock.setsockopt(zmq.SUBSCRIBE, topic.encode("ascii"))
            sock.connect(endpoint)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise ClientError(f"cannot connect to {endpoint!r}: {exc}") from exc
        except BaseException:
            sock.close(linger=0)
            raise
        return sock

    def close(self) -> None:
        """Destroy the context if it is ours (closing any socket still open, linger 0).
        Idempotent; a context passed in is left to its owner."""
        if self._owned and not self._ctx.closed:
            self._ctx.destroy(linger=0)


def wait_readable(sock: zmq.Socket[Any], timeout_s: float | None, what: str) -> None:
    """Return once ``sock`` has a message; ``timeout_s`` None waits for ever.

    :raises ClientTimeoutError: nothing arrived within ``timeout_s`` (the text says
        ``what`` was awaited).
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        wait_ms = POLL_MS
        if deadline is not None:
            wait_ms = min(POLL_MS, max(0, int((deadline - time.monotonic()) * 1000)))
        if sock.poll(wait_ms, zmq.POLLIN):
            return
        if deadline is not None and time.monotonic() >= deadline:
            raise ClientTimeoutError(f"{what} within {timeout_s:g} s")

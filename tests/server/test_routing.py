"""The ROUTER thread behind the command and ingestion sockets: its sockets are closed
on every way out of it."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
import zmq

from server.routing import RouterServer
from tests.server.service_helpers import ANY_PORT

GATE_TIMEOUT_S = 60.0  # a handler held by a test never outlives it


class Echo(RouterServer):
    """Echoes bodies; ``hold`` set makes the handler wait for ``gate`` (a stuck handler)."""

    name = "echo"

    def __init__(self, ctx: zmq.Context[Any]) -> None:
        super().__init__(ctx, ANY_PORT, max_bytes=1024)
        self.hold = False
        self.gate = threading.Event()
        self.entered = threading.Event()

    def handle(self, envelope: list[bytes], body: bytes) -> bytes | None:
        if self.hold:
            self.entered.set()
            self.gate.wait(GATE_TIMEOUT_S)
        return body

    def error_reply(self, message: str) -> bytes:
        return message.encode()


def _ask(ctx: zmq.Context[Any], endpoint: str, body: bytes) -> zmq.Socket[Any]:
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    sock.send(body)
    return sock


def test_stop_closes_the_socket_of_a_server_never_started(ctx: zmq.Context[Any]) -> None:
    srv = Echo(ctx)
    srv.stop()
    assert srv.sock.closed
    srv.stop()  # idempotent


def test_the_thread_closes_its_socket_when_stopped(ctx: zmq.Context[Any]) -> None:
    srv = Echo(ctx)
    srv.start()
    req = _ask(ctx, srv.endpoint, b"ping")
    try:
        assert req.poll(10_000) and req.recv() == b"ping"
    finally:
        req.close()
    srv.stop()
    assert srv.sock.closed


def test_a_stuck_handler_closes_the_socket_when_it_returns(
        ctx: zmq.Context[Any], caplog: pytest.LogCaptureFixture) -> None:
    srv = Echo(ctx)
    srv.hold = True
    srv.start()
    req = _ask(ctx, srv.endpoint, b"ping")
    try:
        assert srv.entered.wait(10), "the request never reached the handler"
        with caplog.at_level(logging.WARNING, logger="server.routing"):
            srv.stop(timeout=0.01)  # the handler holds on: stop gives up waiting
        assert "did not stop" in caplog.text and not srv.sock.closed
    finally:
        srv.gate.set()
        req.close()
    srv.stop()  # the thread ends after its handler: it closed the socket
    assert srv.sock.closed

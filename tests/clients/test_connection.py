"""A client owns its ZeroMQ context and closes every socket it made, on every path."""

from __future__ import annotations

from typing import Any

import pytest
import zmq

from clients.client import ClientError, ClientTimeoutError, SlamClient
from tests.clients.fake_server import FakeServer


def _refuse_global_context() -> Any:
    raise AssertionError("the process-global zmq.Context.instance() was used")


def test_a_client_owns_its_context_and_close_destroys_it(
        fake: FakeServer, made_sockets: list[zmq.Socket[Any]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zmq.Context, "instance", _refuse_global_context)
    with SlamClient(fake.pub, fake.cmd, fake.ingest, timeout_s=2.0) as c:
        assert c.stats()["frames"] == 7
        c.latest_pose()
        c.subscribe("pose")  # never iterated
        assert len(made_sockets) == 3
        assert not any(s.closed for s in made_sockets)
    assert all(s.closed for s in made_sockets)
    assert made_sockets[0].context.closed
    c.close()  # idempotent


def test_a_context_passed_in_stays_open_with_no_socket_left(
        fake: FakeServer, made_sockets: list[zmq.Socket[Any]]) -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        with SlamClient(fake.pub, fake.cmd, fake.ingest, timeout_s=2.0, context=ctx) as c:
            c.stats()
            c.subscribe("pose")
            c.latest_pose()
        assert made_sockets and all(s.closed for s in made_sockets)
        assert not ctx.closed
    finally:
        ctx.term()  # returns at once: no socket of the client is left open


def test_a_bad_endpoint_is_a_client_error_that_leaves_no_socket(
        monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[zmq.Socket[Any]] = []
    original = zmq.Context.socket

    def socket(self: zmq.Context[Any], kind: int, **kw: Any) -> zmq.Socket[Any]:
        sock = original(self, kind, **kw)
        opened.append(sock)
        return sock

    monkeypatch.setattr(zmq.Context, "socket", socket)
    with SlamClient(cmd="no-such-transport://x", timeout_s=1.0) as c:
        with pytest.raises(ClientError, match="cannot connect to 'no-such-transport://x'"):
            c.stats()
        assert opened and all(s.closed for s in opened)


def test_a_timed_out_command_closes_its_socket(
        fake: FakeServer, made_sockets: list[zmq.Socket[Any]]) -> None:
    fake.mute = 1
    with SlamClient(fake.pub, fake.cmd, fake.ingest, timeout_s=0.2) as c:
        with pytest.raises(ClientTimeoutError):
            c.stats()
        assert made_sockets[0].closed
        c.timeout_s = 5.0  # the next reply may take its time on a loaded machine
        assert c.stats()["frames"] == 7  # on a fresh socket
        assert len(made_sockets) == 2

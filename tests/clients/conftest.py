"""A fake service per test, and a client connected to it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from clients.client import SlamClient
from clients.connection import Connection
from tests.clients.fake_server import FakeServer


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


@pytest.fixture
def client(fake: FakeServer) -> Iterator[SlamClient]:
    with SlamClient(fake.pub, fake.cmd, fake.ingest, timeout_s=2.0) as c:
        yield c


@pytest.fixture
def made_sockets(monkeypatch: pytest.MonkeyPatch) -> list[zmq.Socket[Any]]:
    """Every socket a client makes from now on (to check that it closed them)."""
    made: list[zmq.Socket[Any]] = []
    original = Connection.socket

    def recording(self: Connection, *args: Any, **kwargs: Any) -> zmq.Socket[Any]:
        sock = original(self, *args, **kwargs)
        made.append(sock)
        return sock

    monkeypatch.setattr(Connection, "socket", recording)
    return made

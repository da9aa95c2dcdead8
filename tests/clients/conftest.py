"""A fake service per test, and a client connected to it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from clients.client import SlamClient
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

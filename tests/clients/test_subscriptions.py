"""Subscription streams close their socket however the consumer stops."""

from __future__ import annotations

from typing import Any

import pytest
import zmq

from clients.client import ClientTimeoutError, SlamClient
from tests.clients.fake_server import FakeServer, pose_dict


def _first_pose(client: SlamClient, fake: FakeServer, made: list[zmq.Socket[Any]]) -> Any:
    """A stream of poses that has yielded one, and its socket."""
    stream = client.subscribe("pose", timeout_s=5.0)
    fake.wait_subscribed()
    fake.publish("pose", pose_dict(0))
    assert next(stream).seq == 0
    return stream, made[-1]


def test_leaving_a_for_loop_early_closes_the_socket(
        client: SlamClient, fake: FakeServer, made_sockets: list[zmq.Socket[Any]]) -> None:
    fake.stream_hz = 200.0
    for n, _ in enumerate(client.subscribe("pose", timeout_s=5.0)):
        if n == 2:
            break
    fake.stream_hz = 0.0
    assert len(made_sockets) == 1 and made_sockets[0].closed  # CPython frees the stream


def test_closing_a_stream_closes_its_socket(
        client: SlamClient, fake: FakeServer, made_sockets: list[zmq.Socket[Any]]) -> None:
    stream, sock = _first_pose(client, fake, made_sockets)
    assert not sock.closed
    stream.close()
    assert sock.closed
    with pytest.raises(StopIteration):
        next(stream)


def test_a_timed_out_stream_closes_its_socket(
        client: SlamClient, made_sockets: list[zmq.Socket[Any]]) -> None:
    stream = client.subscribe("status", timeout_s=0.05)
    with pytest.raises(ClientTimeoutError, match="no message from"):
        next(stream)
    assert made_sockets[-1].closed


def test_closing_the_client_closes_open_and_unstarted_streams(
        fake: FakeServer, made_sockets: list[zmq.Socket[Any]]) -> None:
    with SlamClient(fake.pub, fake.cmd, fake.ingest, timeout_s=2.0) as c:
        started, _ = _first_pose(c, fake, made_sockets)
        unstarted = c.subscribe("map")
    assert len(made_sockets) == 2 and all(s.closed for s in made_sockets)
    for stream in (started, unstarted):
        with pytest.raises(StopIteration):
            next(stream)

"""The command socket: envelopes, dispatch, refusals, and clients that misbehave."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import zmq

import slam_protocol as proto
from server.commands import CommandServer, serve_request
from server.routing import split_envelope
from slam.errors import MapFileError
from tests.server.service_helpers import ANY_PORT, request

GATE_TIMEOUT_S = 60.0  # a held handler never outlives its test


@dataclass
class Gate:
    """Holds the ``snapshot`` handler (a slow one): ``entered`` is set when it starts,
    and it returns once ``opened`` is."""

    entered: threading.Event = field(default_factory=threading.Event)
    opened: threading.Event = field(default_factory=threading.Event)


def _handlers(calls: list[str], gate: Gate | None = None) -> dict[str, Any]:
    def stats(c: proto.Command) -> dict[str, Any]:
        calls.append("stats")
        return {"frames": 7}

    def slow(c: proto.Command) -> dict[str, Any]:
        if gate is not None:
            gate.entered.set()
            assert gate.opened.wait(GATE_TIMEOUT_S), "the test never opened the gate"
        calls.append("snapshot")
        return {"last_seq": 1}

    def load(c: proto.Command) -> dict[str, Any]:
        raise MapFileError(f"no map named {c.args['name']!r}")

    def broken(c: proto.Command) -> dict[str, Any]:
        raise KeyError("bug")

    return {"stats": stats, "snapshot": slow, "load_map": load, "reset": broken,
            "shutdown": lambda c: {}}


@pytest.fixture
def server() -> Iterator[tuple[CommandServer, list[str], zmq.Context[Any]]]:
    ctx: zmq.Context[Any] = zmq.Context()
    calls: list[str] = []
    srv = CommandServer(ctx, ANY_PORT, _handlers(calls), max_bytes=4096,
                        after_reply=lambda cmd: calls.append(f"after {cmd}"))
    srv.start()
    yield srv, calls, ctx
    srv.stop()
    ctx.destroy(linger=0)


def test_envelopes_of_req_dealer_and_proxied_requests() -> None:
    assert split_envelope([b"id", b"", b"body"]) == ([b"id", b""], [b"body"])
    assert split_envelope([b"id", b"body"]) == ([b"id"], [b"body"])
    assert split_envelope([b"id", b"hop", b"", b"body"]) == ([b"id", b"hop", b""], [b"body"])
    assert split_envelope([b"id", b"a", b"b"]) == ([b"id"], [b"a", b"b"])
    assert split_envelope([b"id", b""]) == ([b"id", b""], [])


def test_serve_request_replies_to_everything() -> None:
    calls: list[str] = []
    handlers = _handlers(calls)
    ok, done = serve_request(proto.encode({"cmd": "stats"}), handlers, 4096)
    assert proto.decode(ok) == {"v": 1, "ok": True, "frames": 7} and done == "stats"
    for body, match in [
        (b"\x00\x01junk", "trailing bytes"),
        (b"\x05", "must be a msgpack map"),
        (proto.encode({"cmd": "pause"}), "not available"),
        (proto.encode({"cmd": "load_map", "name": "m"}), "load_map failed: no map named 'm'"),
        (proto.encode({"cmd": "reset"}), "reset failed: internal error .KeyError"),
        (proto.encode({"v": 9, "cmd": "stats"}), "unsupported schema version 9"),
        (proto.encode({"cmd": "stats", "pad": b"x" * 5000}), "exceeds the limit"),
    ]:
        reply, done = serve_request(body, handlers, 4096)
        decoded = proto.decode(reply)
        assert decoded["ok"] is False and done is None
        assert re.search(match, decoded["error"]), decoded["error"]


def test_req_and_dealer_clients_get_their_replies(
        server: tuple[CommandServer, list[str], zmq.Context[Any]]) -> None:
    srv, _, ctx = server
    assert request(ctx, srv.endpoint, {"cmd": "stats"}) == {"v": 1, "ok": True, "frames": 7}
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(srv.endpoint)
    dealer.send(proto.encode({"cmd": "stats"}))  # no delimiter
    assert dealer.poll(5000) and proto.decode(dealer.recv())["frames"] == 7
    dealer.send_multipart([b"", proto.encode({"cmd": "stats"})])  # REQ-style delimiter
    assert dealer.poll(5000)
    empty, body = dealer.recv_multipart()
    assert empty == b"" and proto.decode(body)["frames"] == 7
    dealer.send_multipart([b"junk", b"more junk"])
    assert dealer.poll(5000)
    refused = proto.decode(dealer.recv())
    assert refused["ok"] is False and "one message frame" in refused["error"]
    dealer.close()


def test_oversize_requests_get_an_error_reply(
        server: tuple[CommandServer, list[str], zmq.Context[Any]]) -> None:
    srv, calls, ctx = server
    reply = request(ctx, srv.endpoint, proto.encode({"cmd": "stats", "pad": b"x" * 6000}))
    assert reply is not None and reply["ok"] is False and "exceeds the limit" in reply["error"]
    assert calls == []


def test_a_client_killed_mid_request_disturbs_nobody() -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    calls: list[str] = []
    gate = Gate()
    srv = CommandServer(ctx, ANY_PORT, _handlers(calls, gate), max_bytes=4096)
    srv.start()
    replies: list[dict[str, Any] | None] = []
    threads = [threading.Thread(target=lambda: replies.append(
        request(ctx, srv.endpoint, {"cmd": "stats"}))) for _ in range(5)]
    try:
        doomed = ctx.socket(zmq.DEALER)
        doomed.connect(srv.endpoint)
        doomed.send(proto.encode({"cmd": "snapshot"}))
        assert gate.entered.wait(10), "the request never reached its handler"
        doomed.close(linger=0)  # gone before its reply
        gate.opened.set()
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        gate.opened.set()
        srv.stop()
        ctx.destroy(linger=0)
    assert replies == [{"v": 1, "ok": True, "frames": 7}] * 5
    assert calls.count("snapshot") == 1


def test_after_reply_runs_once_the_reply_is_sent(
        server: tuple[CommandServer, list[str], zmq.Context[Any]]) -> None:
    srv, calls, ctx = server
    assert request(ctx, srv.endpoint, {"cmd": "shutdown"}) == {"v": 1, "ok": True}
    assert request(ctx, srv.endpoint, {"cmd": "load_map", "name": "x"})["ok"] is False  # type: ignore[index]
    assert calls == ["after shutdown"]  # not after a failed command

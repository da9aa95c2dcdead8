"""Fuzzing the command and ingestion sockets: every malformed message gets an error reply,
and the service neither dies nor hangs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import slam_protocol as proto
from server.service import SlamService
from tests.server.service_helpers import request, start_service

SAFE_COMMANDS = ("stats", "snapshot", "pause", "resume")
FUZZ = settings(max_examples=250, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

ints = st.integers(-(2**63), 2**64 - 1)  # what msgpack can carry
scalars = st.one_of(st.none(), st.booleans(), ints,
                    st.floats(allow_nan=True), st.text(max_size=16), st.binary(max_size=32))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.text(max_size=6), ints),
                                                 inner, max_size=4)), max_leaves=12)
versions = st.one_of(st.just(1), ints, st.text(max_size=3), st.none(), st.floats())
huge_headers = st.sampled_from([
    b"\xc6\xff\xff\xff\xff", b"\xc6\x7f\xff\xff\xff", b"\xdb\xff\xff\xff\xff",
    b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff", b"\xc9\xff\xff\xff\xff\x01",
])


def _pack(obj: Any) -> bytes:
    return bytes(msgpack.packb(obj, use_bin_type=True))


commands = st.fixed_dictionaries(
    {"v": versions, "cmd": st.one_of(st.sampled_from([*proto.COMMANDS, "nope"]), values)},
    optional={"path": values, "name": st.one_of(values, st.from_regex(
        proto.MAP_NAME_RE, fullmatch=True)), "extra": values}).map(_pack)
frames = st.fixed_dictionaries(
    {"v": versions, "seq": values, "stamp": st.one_of(values, st.fixed_dictionaries(
        {"sec": values, "nanosec": values})),
     "encoding": st.one_of(st.sampled_from(proto.ENCODINGS), values), "image": values},
    optional={"shape": st.one_of(values, st.lists(st.integers(-5, 70000), max_size=4)),
              "depth": values, "depth_scale": values, "right": values}).map(_pack)
junk_maps = st.dictionaries(st.one_of(st.text(max_size=6), ints), values,
                            max_size=6).map(_pack)
huge = st.builds(lambda head, tail, prefix: prefix + head + tail, huge_headers,
                 st.binary(max_size=16),
                 st.sampled_from([b"", b"\x82\xa1v\x01\xa5image", b"\x81\xa1v\x01"]))
bodies = st.one_of(st.binary(max_size=256), commands, frames, junk_maps, huge,
                   st.tuples(st.one_of(commands, frames), st.integers(0, 1000)).map(
                       lambda t: t[0][: t[1] % max(1, len(t[0]))]))


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlamService]:
    svc = start_service(None, paused=True, max_message_bytes=1 << 16,
                        map_dir=tmp_path_factory.mktemp("maps"))
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def ctx() -> Iterator[zmq.Context[Any]]:
    context: zmq.Context[Any] = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture(scope="module")
def dealers(service: SlamService, ctx: zmq.Context[Any]) -> Iterator[dict[str, zmq.Socket[Any]]]:
    """One DEALER per service socket (``cmd``, ``ingest``), shared by the examples."""
    socks: dict[str, zmq.Socket[Any]] = {}
    try:
        for name in ("cmd", "ingest"):
            socks[name] = ctx.socket(zmq.DEALER)
            socks[name].setsockopt(zmq.LINGER, 0)
            socks[name].connect(service.endpoints[name])
        yield socks
    finally:
        for sock in socks.values():
            sock.close()


def _exchange(sock: zmq.Socket[Any], parts: list[bytes]) -> dict[str, Any]:
    sock.send_multipart([b"", *parts])
    assert sock.poll(5000), "no reply: the server hangs or died"
    empty, body = sock.recv_multipart()
    assert empty == b""
    reply = proto.decode(body)
    assert isinstance(reply["ok"], bool)
    return reply


def _is_command(body: bytes) -> str | None:
    try:
        return proto.Command.from_dict(proto.decode(body)).cmd
    except proto.ProtocolError:
        return None


@FUZZ
@given(body=bodies)
def test_commands_socket_answers_every_message(dealers: dict[str, zmq.Socket[Any]],
                                               body: bytes) -> None:
    cmd = _is_command(body)
    assume(cmd is None or cmd in SAFE_COMMANDS)
    reply = _exchange(dealers["cmd"], [body])
    assert reply["ok"] is (cmd is not None)
    if cmd is None:
        assert isinstance(reply["error"], str) and reply["error"]


@FUZZ
@given(body=bodies)
def test_ingestion_socket_answers_every_message(dealers: dict[str, zmq.Socket[Any]],
                                                body: bytes) -> None:
    reply = _exchange(dealers["ingest"], [body])
    assert reply["ok"] is False and reply["error"] and isinstance(reply["seq"], int)


@FUZZ
@given(parts=st.lists(st.binary(max_size=64), min_size=2, max_size=5))
def test_multipart_junk_is_refused(dealers: dict[str, zmq.Socket[Any]],
                                   parts: list[bytes]) -> None:
    for name in ("cmd", "ingest"):
        reply = _exchange(dealers[name], parts)
        assert reply["ok"] is False


def test_a_flood_of_garbage_is_answered_in_full_and_the_service_lives_on(
        service: SlamService, ctx: zmq.Context[Any],
        dealers: dict[str, zmq.Socket[Any]]) -> None:
    n = 2000
    junk = [bytes([i % 256]) * (i % 97) + b"\xc1" for i in range(n)]
    for name in ("cmd", "ingest"):
        sock = dealers[name]
        for body in junk:  # pipelined: all sent before any reply is read
            sock.send(body)
        replies = 0
        while replies < n and sock.poll(5000):
            assert proto.decode(sock.recv())["ok"] is False
            replies += 1
        assert replies == n, name
    oversize = request(ctx, service.endpoints["cmd"], b"\x81\xa1v\x01" + b"\0" * (1 << 17))
    assert oversize is not None and "exceeds the limit" in oversize["error"]
    stats = request(ctx, service.endpoints["cmd"], {"cmd": "stats"})
    assert stats is not None and stats["ok"] and stats["frames"] == 0
    assert service.commands is not None and service.commands._thread.is_alive()
    assert service.ingest is not None and service.ingest._thread.is_alive()

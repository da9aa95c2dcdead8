"""The viewer bridge: static files, snapshot-then-live WebSocket relay, back-pressure."""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
from collections.abc import Iterator

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

import slam_protocol as protocol
from server import web_access, web_bridge
from server.security import CurveClientKeys, CurveServerKeys, viewer_token
from server.web_bridge import ClientQueue, frame_message, start_bridge
from slam.errors import ConfigError
from tests.server.fake_service import FakeService, SyntheticRun

RUN = SyntheticRun.make(n_frames=20)


@pytest.fixture
def service() -> Iterator[FakeService]:
    fake = FakeService(RUN.snapshot(n_poses=5, n_points=50))
    yield fake
    fake.close()


@pytest.fixture
def bridge(service: FakeService) -> Iterator[web_bridge.BridgeHandle]:
    handle = start_bridge(0, service.pub_endpoint, service.cmd_endpoint)
    service.wait_subscribed()
    yield handle
    handle.stop()


def ws_url(handle: web_bridge.BridgeHandle) -> str:
    return f"ws://127.0.0.1:{handle.port}/ws"


def receive(ws: ClientConnection, timeout: float = 5.0) -> tuple[str, bytes]:
    """(topic, msgpack payload) of the next browser message."""
    data = ws.recv(timeout=timeout)
    assert isinstance(data, bytes), "the bridge sends binary messages only"
    n = data[0]
    return data[1:1 + n].decode("ascii"), data[1 + n:]


def http_get(port: int, path: str) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", path)  # the path goes out as written: '..' is not normalised
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, response.getheader("Content-Type", ""), body


# --- HTTP -------------------------------------------------------------------------
@pytest.mark.parametrize(("path", "file", "ctype"), [
    ("/", "index.html", "text/html"),
    ("/index.html", "index.html", "text/html"),
    ("/viewer.js", "viewer.js", "text/javascript"),
    ("/msgpack.js", "msgpack.js", "text/javascript"),
    ("/vendor/three.module.js", "vendor/three.module.js", "text/javascript"),
    ("/vendor/three.core.js", "vendor/three.core.js", "text/javascript"),
    ("/viewer.js?cache=1", "viewer.js", "text/javascript"),
])
def test_http_serves_web_files(bridge: web_bridge.BridgeHandle, path: str, file: str,
                               ctype: str) -> None:
    status, content_type, body = http_get(bridge.port, path)
    assert status == 200
    assert content_type.split(";")[0] == ctype
    assert body == (web_bridge.WEB_ROOT / file).read_bytes()


@pytest.mark.parametrize("path", [
    "/nope.html", "/../web_bridge.py", "/vendor/../../web_bridge.py", "/%2e%2e/web_bridge.py",
    "/vendor/%2e%2e/%2e%2e/protocol.py", "/..%2fweb_bridge.py", "//etc/passwd", "/web/index.html",
    "/vendor/", "/ws/../index.html",
])
def test_http_unknown_paths_and_traversal_are_404(bridge: web_bridge.BridgeHandle,
                                                  path: str) -> None:
    status, _, body = http_get(bridge.port, path)
    assert status == 404
    assert b"import" not in body and b"root:" not in body


def test_static_file_table_lists_only_web_files() -> None:
    files = web_bridge.load_static_files()
    assert files["/"] == files["/index.html"]
    assert {"/viewer.js", "/scene.js", "/controls.js", "/vendor/three.module.js"} <= set(files)
    assert all(not p.endswith(".py") and "/." not in p for p in files)


# --- WebSocket relay --------------------------------------------------------------
def test_snapshot_first_then_published_messages_verbatim(
        bridge: web_bridge.BridgeHandle, service: FakeService) -> None:
    with connect(ws_url(bridge)) as ws:
        topic, payload = receive(ws)
        assert topic == "snapshot"
        snap = protocol.decode(payload)
        assert snap["ok"] and snap["last_seq"] == 4
        ids = protocol.unpack_array(snap["points"]["ids"], np.int64)
        np.testing.assert_array_equal(ids, np.arange(50))
        xyz = protocol.unpack_array(snap["points"]["xyz"], np.float32, (3,))
        np.testing.assert_array_equal(xyz, RUN.xyz[:50])
        sent = [(t, service.publish(t, m)) for t, m in RUN.messages(5, 8)]
        got = [receive(ws) for _ in sent]
    assert got == sent  # same order, same bytes
    assert [t for t, _ in got][:2] == ["pose", "map"]
    assert service.commands == ["snapshot"]


def test_bad_pub_messages_are_skipped(bridge: web_bridge.BridgeHandle,
                                      service: FakeService) -> None:
    with connect(ws_url(bridge)) as ws:
        assert receive(ws)[0] == "snapshot"
        service.publish("pose", b"\xc1 not msgpack")
        service.publish("pose", protocol.encode({"v": 99, "seq": 0}))
        service.publish("secret", RUN.pose(0))
        good = service.publish("pose", RUN.pose(6))
        assert receive(ws) == ("pose", good)
        with pytest.raises(TimeoutError):
            receive(ws, timeout=0.3)


def test_browser_commands_are_whitelisted(bridge: web_bridge.BridgeHandle,
                                          service: FakeService) -> None:
    with connect(ws_url(bridge)) as ws:
        assert receive(ws)[0] == "snapshot"
        ws.send(json.dumps({"cmd": "pause"}))
        topic, payload = receive(ws)
        assert topic == "reply" and protocol.decode(payload)["ok"] is True
        ws.send(json.dumps({"cmd": "shutdown"}))
        topic, payload = receive(ws)
        reply = protocol.decode(payload)
        assert topic == "reply" and reply["ok"] is False and "shutdown" in reply["error"]
        ws.send("{not json")
        assert protocol.decode(receive(ws)[1])["ok"] is False
        ws.send(json.dumps({"cmd": "snapshot"}))
        assert receive(ws)[0] == "snapshot"
    assert service.commands == ["snapshot", "pause", "snapshot"]


def test_cross_origin_websocket_is_refused(bridge: web_bridge.BridgeHandle) -> None:
    with pytest.raises(InvalidStatus) as err:
        connect(ws_url(bridge), origin=Origin("http://evil.example"))
    assert err.value.response.status_code == 403
    with connect(ws_url(bridge), origin=Origin(f"http://127.0.0.1:{bridge.port}")) as ws:
        assert receive(ws)[0] == "snapshot"


def test_hung_service_gives_an_error_note_and_live_messages_still_flow(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web_bridge, "COMMAND_TIMEOUT_S", 0.3)
    service = FakeService({}, answer=False)
    handle = start_bridge(0, service.pub_endpoint, service.cmd_endpoint)
    try:
        service.wait_subscribed()
        with connect(ws_url(handle)) as ws:
            topic, payload = receive(ws)
            assert topic == "bridge" and "snapshot failed" in protocol.decode(payload)["error"]
            sent = service.publish("pose", RUN.pose(0))
            assert receive(ws) == ("pose", sent)
    finally:
        handle.stop()
        service.close()


def test_curve_encrypted_service_with_the_right_keys_only() -> None:
    import zmq

    server_public, server_secret = zmq.curve_keypair()
    client = CurveClientKeys.ephemeral(server_public)
    stranger = CurveClientKeys.ephemeral(server_public)
    keys = CurveServerKeys(server_public, server_secret, frozenset({client.public}))
    service = FakeService(RUN.snapshot(n_poses=2, n_points=3), curve=keys)
    token = viewer_token(server_secret)
    good = start_bridge(0, service.pub_endpoint, service.cmd_endpoint, curve=client, token=token)
    try:
        service.wait_subscribed()
        with connect(ws_url(good)) as ws:
            ws.send(json.dumps({"auth": token}))
            topic, payload = receive(ws)
            assert topic == "snapshot" and protocol.decode(payload)["last_seq"] == 1
            sent = service.publish("pose", RUN.pose(2))
            assert receive(ws) == ("pose", sent)
    finally:
        good.stop()
    web_bridge.COMMAND_TIMEOUT_S, saved = 0.3, web_bridge.COMMAND_TIMEOUT_S
    refused = start_bridge(0, service.pub_endpoint, service.cmd_endpoint, curve=stranger,
                           token=token)
    try:
        with connect(ws_url(refused)) as ws:
            ws.send(json.dumps({"auth": token}))
            topic, payload = receive(ws)
            assert topic == "bridge" and "snapshot failed" in protocol.decode(payload)["error"]
    finally:
        web_bridge.COMMAND_TIMEOUT_S = saved
        refused.stop()
        service.close()


def test_slow_browser_does_not_block_the_others(bridge: web_bridge.BridgeHandle,
                                                service: FakeService,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web_bridge, "MAX_QUEUE_BYTES", 2 << 20)
    stalled = _open_stalled_websocket(bridge.port)
    blob = np.random.default_rng(0).integers(0, 255, 256 * 1024, dtype=np.uint8).tobytes()
    n = 90  # 22 MiB: far more than the socket buffers and the (here) 2 MiB queue limit
    with connect(ws_url(bridge), max_size=None) as fast:
        assert receive(fast)[0] == "snapshot"
        # Lockstep: the fast browser never falls behind. A bridge blocked by the stalled
        # browser would miss receive's deadline here (no wall-clock bound on the whole).
        for i in range(n):
            sent = service.publish("map", {"seq": i, "added": {}, "moved": {}, "removed": {},
                                           "pad": blob})
            assert receive(fast) == ("map", sent)
    # The stalled browser, once it reads, gets what was in flight, then a resync.
    topics = _read_topics(stalled, until=("bridge", "snapshot"))
    stalled.close()
    assert topics[0] == "snapshot" and topics[-2:] == ["bridge", "snapshot"]
    assert 1 <= topics.count("map") < n


def _read_topics(sock: socket.socket, until: tuple[str, ...], timeout: float = 10.0) -> list[str]:
    """Topics of the (unmasked, unfragmented) server frames until ``until`` ends the list."""
    sock.settimeout(timeout)
    stream = sock.makefile("rb")
    topics: list[str] = []
    while tuple(topics[-len(until):]) != until:
        head = stream.read(2)
        length = head[1] & 0x7F
        if length == 126:
            length = int.from_bytes(stream.read(2), "big")
        elif length == 127:
            length = int.from_bytes(stream.read(8), "big")
        payload = stream.read(length)
        if head[0] & 0x0F == 0x2:  # binary frame
            topics.append(payload[1:1 + payload[0]].decode("ascii"))
    return topics


def _open_stalled_websocket(port: int) -> socket.socket:
    """A WebSocket client that completes the handshake and then never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)  # read exactly the handshake response, nothing more
    assert head.startswith(b"HTTP/1.1 101")
    return sock


# --- access: the viewer token (CurveZMQ on) and the Host/Origin checks ---------------
@pytest.fixture
def curve_bridge() -> Iterator[tuple[FakeService, web_bridge.BridgeHandle, str]]:
    """An encrypted fake service and its bridge, which wants the viewer token."""
    import zmq

    server_public, server_secret = zmq.curve_keypair()
    client = CurveClientKeys.ephemeral(server_public)
    keys = CurveServerKeys(server_public, server_secret, frozenset({client.public}))
    service = FakeService(RUN.snapshot(n_poses=3, n_points=4), curve=keys)
    token = viewer_token(server_secret)
    handle = start_bridge(0, service.pub_endpoint, service.cmd_endpoint, curve=client,
                          token=token)
    try:
        service.wait_subscribed()
        yield service, handle, token
    finally:
        handle.stop()
        service.close()


def drain(ws: ClientConnection, timeout: float = 10.0) -> tuple[list[bytes | str], int | None]:
    """Everything received until the bridge closes the socket, and its close code."""
    received: list[bytes | str] = []
    with pytest.raises(ConnectionClosed):
        while True:
            received.append(ws.recv(timeout=timeout))
    return received, ws.close_code


def test_without_the_credential_nothing_arrives_and_the_socket_closes(
        curve_bridge: tuple[FakeService, web_bridge.BridgeHandle, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web_access, "AUTH_TIMEOUT_S", 0.5)
    service, handle, _ = curve_bridge
    with connect(ws_url(handle)) as ws:
        for i in range(5):
            service.publish("pose", RUN.pose(i))
        received, code = drain(ws)
    assert received == [] and code == web_access.CLOSE_UNAUTHORIZED
    assert ws.close_reason == "no credential in time"
    assert service.commands == []  # not even a snapshot was fetched for it


@pytest.mark.parametrize(("first", "reason"), [
    ({"auth": "0" * 64}, "credential refused"),
    ({"auth": None}, "credential required"),
    ({"cmd": "pause"}, "credential required"),
    ({"cmd": "snapshot"}, "credential required"),
])
def test_a_wrong_or_missing_credential_closes_at_once_and_commands_are_refused(
        curve_bridge: tuple[FakeService, web_bridge.BridgeHandle, str],
        first: dict[str, object], reason: str) -> None:
    service, handle, token = curve_bridge
    with connect(ws_url(handle)) as ws:
        ws.send(json.dumps(first))
        service.publish("pose", RUN.pose(0))
        received, code = drain(ws)
        with pytest.raises(ConnectionClosed):
            ws.send(json.dumps({"auth": token}))  # too late: the socket is gone
    assert received == [] and code == web_access.CLOSE_UNAUTHORIZED
    assert ws.close_reason == reason
    assert service.commands == []


def test_the_right_credential_gets_the_snapshot_live_topics_and_controls(
        curve_bridge: tuple[FakeService, web_bridge.BridgeHandle, str]) -> None:
    service, handle, token = curve_bridge
    assert handle.page_url == f"http://127.0.0.1:{handle.port}/#token={token}"
    with connect(ws_url(handle), origin=Origin(f"http://127.0.0.1:{handle.port}")) as ws:
        ws.send(json.dumps({"auth": token.upper()}))  # hex digits in either case
        assert receive(ws)[0] == "snapshot"
        sent = service.publish("pose", RUN.pose(3))
        assert receive(ws) == ("pose", sent)
        ws.send(json.dumps({"auth": token}))  # a repeated credential is ignored
        ws.send(json.dumps({"cmd": "pause"}))
        topic, payload = receive(ws)
        assert topic == "reply" and protocol.decode(payload)["ok"] is True
    assert service.commands == ["snapshot", "pause"]


def test_an_encrypted_service_needs_a_token_and_allow_lists_are_checked(
        service: FakeService) -> None:
    import zmq

    client = CurveClientKeys.ephemeral(zmq.curve_keypair()[0])
    with pytest.raises(ConfigError, match="viewer token"):
        start_bridge(0, service.pub_endpoint, service.cmd_endpoint, curve=client)
    with pytest.raises(ConfigError, match="--allow-host"):
        start_bridge(0, service.pub_endpoint, service.cmd_endpoint, allow_hosts=["a b"])


def raw_status(port: int, path: str, headers: list[tuple[str, str]]) -> int:
    """Status of a GET sent byte for byte (so Host can be missing, doubled or foreign)."""
    lines = [f"GET {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers)]
    if path == "/ws":
        key = base64.b64encode(os.urandom(16)).decode()
        lines += ["Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
                  "Sec-WebSocket-Version: 13"]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = b""
        while b"\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    return int(head.split(b" ", 2)[1])


@pytest.mark.parametrize("path", ["/", "/viewer.js", "/ws"])
def test_host_and_origin_are_checked_on_every_request(bridge: web_bridge.BridgeHandle,
                                                      path: str) -> None:
    own = f"127.0.0.1:{bridge.port}"
    ok = 101 if path == "/ws" else 200
    assert raw_status(bridge.port, path, [("Host", own)]) == ok
    assert raw_status(bridge.port, path, [("Host", f"localhost:{bridge.port}"),
                                          ("Origin", f"http://localhost:{bridge.port}")]) == ok
    rebinding = f"evil.example:{bridge.port}"  # DNS rebinding: same port, the attacker's name
    assert raw_status(bridge.port, path, [("Host", rebinding)]) == 403
    assert raw_status(bridge.port, path, [("Host", rebinding),
                                          ("Origin", f"http://{rebinding}")]) == 403
    assert raw_status(bridge.port, path, [("Host", own), ("Origin", "http://evil.example")]) == 403


@pytest.mark.parametrize("path", ["/", "/ws"])
def test_duplicated_or_missing_host_is_400_not_500(bridge: web_bridge.BridgeHandle,
                                                    path: str) -> None:
    own, rebinding = f"127.0.0.1:{bridge.port}", f"evil.example:{bridge.port}"
    assert raw_status(bridge.port, path, [("Host", own), ("Host", own)]) == 400
    assert raw_status(bridge.port, path, [("Host", own), ("Host", rebinding)]) == 400
    assert raw_status(bridge.port, path, []) == 400


def test_allow_listed_host_and_origin_are_accepted(service: FakeService) -> None:
    handle = start_bridge(0, service.pub_endpoint, service.cmd_endpoint,
                          allow_hosts=["robot.lan"], allow_origins=["https://ops.example"])
    try:
        host = ("Host", f"robot.lan:{handle.port}")
        assert raw_status(handle.port, "/ws", [host]) == 101
        assert raw_status(handle.port, "/ws", [host, ("Origin", "https://ops.example")]) == 101
        assert raw_status(handle.port, "/", [("Host", "robot.lan:1")]) == 403
    finally:
        handle.stop()


def test_start_bridge_on_a_busy_port_raises_config_error(service: FakeService) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        with pytest.raises(ConfigError, match="cannot listen"):
            start_bridge(busy.getsockname()[1], service.pub_endpoint, service.cmd_endpoint)
    finally:
        busy.close()


def test_stop_closes_the_port(service: FakeService) -> None:
    handle = start_bridge(0, service.pub_endpoint, service.cmd_endpoint)
    assert handle.url == f"http://127.0.0.1:{handle.port}/"
    handle.stop()
    handle.stop()  # idempotent
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", handle.port), timeout=1).close()


# --- per-browser queue ------------------------------------------------------------
def test_client_queue_keeps_only_the_newest_image_and_status() -> None:
    queue = ClientQueue()
    assert queue.take_snapshot_request() and not queue.take_snapshot_request()
    for topic, payload in [("pose", b"p0"), ("image", b"i0"), ("status", b"s0"), ("pose", b"p1"),
                           ("image", b"i1"), ("map", b"m0"), ("status", b"s1")]:
        queue.offer(topic, payload)
    out = [queue.pop() for _ in range(len(queue))]
    assert out == [("pose", b"p0"), ("pose", b"p1"), ("image", b"i1"), ("map", b"m0"),
                   ("status", b"s1")]
    assert queue.pop() is None and queue.dropped == 2


@pytest.mark.parametrize(("max_messages", "max_bytes", "n", "size"), [(8, 1 << 20, 9, 10),
                                                                      (100, 1000, 3, 400)])
def test_client_queue_overflow_empties_it_and_asks_for_a_snapshot(
        max_messages: int, max_bytes: int, n: int, size: int) -> None:
    queue = ClientQueue(max_messages=max_messages, max_bytes=max_bytes)
    queue.take_snapshot_request()
    for i in range(n):
        queue.offer("pose", bytes(size))
        assert len(queue) == (i + 1 if i < n - 1 else 0)
    assert queue.dropped == n and queue.needs_snapshot
    queue.offer("pose", b"after")
    assert queue.take_snapshot_request() and queue.pop() is None  # superseded by the snapshot
    queue.offer("pose", b"next")
    assert queue.pop() == ("pose", b"next")


def test_frame_message_layout() -> None:
    assert frame_message("map", b"\x81\xa1v\x01") == b"\x03map\x81\xa1v\x01"

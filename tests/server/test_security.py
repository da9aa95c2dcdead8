"""CurveZMQ: key files, and a service that talks to admitted clients only."""

from __future__ import annotations

import hashlib
import hmac
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.auth
from zmq.utils import z85

import slam_protocol as proto
from server import cli
from server.security import (
    VIEWER_TOKEN_LABEL,
    CurveClientKeys,
    CurveServerKeys,
    generate_keys,
    load_viewer_token,
    viewer_token,
    viewer_token_matches,
)
from server.service import SlamService
from slam.errors import ConfigError
from tests.server.service_helpers import Subscriber, request, start_service


def test_generated_keys_load_back_as_a_working_set(tmp_path: Path) -> None:
    keys = generate_keys(tmp_path / "keys", ("robot", "viewer"))
    server = CurveServerKeys.load(keys.server_secret, keys.authorized_dir)
    robot = CurveClientKeys.load(tmp_path / "keys" / "robot.key_secret", keys.server_public)
    viewer_public, _ = zmq.auth.load_certificate(tmp_path / "keys" / "viewer.key")
    assert server.allowed_clients == {robot.public, viewer_public}
    assert robot.server_public == server.public and len(server.secret) == 40
    assert (keys.server_secret.stat().st_mode & 0o777) == 0o600
    assert sorted(p.name for p in keys.authorized_dir.iterdir()) == ["robot.key", "viewer.key"]


def test_key_generation_and_loading_refuse_mistakes(tmp_path: Path) -> None:
    keys = generate_keys(tmp_path)
    with pytest.raises(ConfigError, match="exists; pass --force"):
        generate_keys(tmp_path)
    assert generate_keys(tmp_path, force=True).server_secret == keys.server_secret
    for names in (("server",), ("a/b",), ("x", "x"), ("",)):
        with pytest.raises(ConfigError):
            generate_keys(tmp_path / "other", names)
    with pytest.raises(ConfigError, match="no secret key"):
        CurveServerKeys.load(keys.server_public, keys.authorized_dir)
    with pytest.raises(ConfigError, match="not found"):
        CurveServerKeys.load(tmp_path / "missing.key_secret", keys.authorized_dir)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no client public keys"):
        CurveServerKeys.load(keys.server_secret, tmp_path / "empty")
    (tmp_path / "bad.key_secret").write_text("not a certificate")
    with pytest.raises(ConfigError):
        CurveClientKeys.load(tmp_path / "bad.key_secret", keys.server_public)


@pytest.fixture
def curve_service(tmp_path: Path) -> Iterator[tuple[SlamService, Path]]:
    keys = generate_keys(tmp_path, ("robot",))
    svc = start_service(None, curve=CurveServerKeys.load(keys.server_secret,
                                                         keys.authorized_dir))
    yield svc, tmp_path
    svc.stop()


def _as(keys: CurveClientKeys | None) -> Callable[[zmq.Socket[Any]], None] | None:
    return None if keys is None else keys.apply


def test_only_admitted_clients_hear_the_service(curve_service: tuple[SlamService, Path]
                                                ) -> None:
    svc, folder = curve_service
    ep = svc.endpoints
    admitted = CurveClientKeys.load(folder / "robot.key_secret", folder / "server.key")
    stranger = CurveClientKeys.ephemeral(admitted.server_public)  # right server, unknown key
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        subs = {name: Subscriber(ctx, ep["pub"], setup=_as(keys))
                for name, keys in (("admitted", admitted), ("stranger", stranger),
                                   ("plain", None))}
        assert subs["admitted"].collect(lambda s: len(s.of("status")) >= 2, 5.0)
        for name in ("stranger", "plain"):
            assert not subs[name].collect(lambda s: bool(s.messages), 0.5), name
        reply = request(ctx, ep["cmd"], {"cmd": "stats"}, setup=_as(admitted))
        assert reply is not None and reply["ok"] and reply["frames"] == 0
        assert request(ctx, ep["cmd"], {"cmd": "stats"}, 0.5, setup=_as(stranger)) is None
        assert request(ctx, ep["cmd"], {"cmd": "stats"}, 0.5) is None
        frame = proto.IngestFrame(0, proto.Stamp(0, 0), "png", b"x").to_dict()
        assert request(ctx, ep["ingest"], frame, 0.5, setup=_as(stranger)) is None
        refused = request(ctx, ep["ingest"], frame, setup=_as(admitted))
        assert refused is not None and refused["ok"] is False  # heard, and answered
        for sub in subs.values():
            sub.close()
    finally:
        ctx.destroy(linger=0)


# --- the browser viewer's token ---------------------------------------------------------
def test_viewer_token_is_a_stable_hmac_of_the_server_secret(tmp_path: Path) -> None:
    keys = generate_keys(tmp_path / "keys")
    server = CurveServerKeys.load(keys.server_secret, keys.authorized_dir)
    token = viewer_token(server.secret)
    assert len(token) == 64 and int(token, 16) >= 0
    assert load_viewer_token(keys.server_secret) == token == viewer_token(server.secret)
    assert viewer_token(zmq.curve_keypair()[1]) != token
    expected = hmac.new(z85.decode(server.secret), VIEWER_TOKEN_LABEL, hashlib.sha256)
    assert token == expected.hexdigest()  # what docs/security.md tells operators
    assert viewer_token_matches(token, token) and viewer_token_matches(token, f" {token.upper()}")
    for wrong in ("", token[:-1], token[:-1] + "0" if token[-1] != "0" else token[:-1] + "1",
                  "é" * 64):
        assert not viewer_token_matches(token, wrong)
    with pytest.raises(ConfigError, match="no secret key"):
        load_viewer_token(keys.server_public)


def test_keys_viewer_token_prints_the_token(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    keys = generate_keys(tmp_path)
    assert cli.main(["keys", "viewer-token", "--server-key", str(keys.server_secret)]) == 0
    assert capsys.readouterr().out.strip() == load_viewer_token(keys.server_secret)
    assert cli.main(["keys", "viewer-token", "--server-key", str(tmp_path / "nope")]) != 0


def _zmtp1_exchange(endpoint: str, payload: bytes) -> bytes:
    """Send ``payload`` as an unversioned (ZMTP/1.0) peer would, the framing an HTTP
    request from a web page falls into; everything received until the server hangs up
    or replies."""
    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    received = b""
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"\x01\x00" + bytes([len(payload) + 1, 0]) + payload)
        try:
            while chunk := sock.recv(4096):
                received += chunk
                if REPLY_MARKER in received:
                    break
        except ConnectionResetError:
            pass  # hung up on us: refused
        except TimeoutError:
            pytest.fail(f"{endpoint}: neither answered nor closed")
    return received


REPLY_MARKER = b"\xa2ok"  # the msgpack key "ok" of every reply


def test_unversioned_peers_such_as_web_pages_are_refused_without_curve() -> None:
    svc = start_service(None)
    try:
        ep = svc.endpoints
        assert REPLY_MARKER not in _zmtp1_exchange(ep["cmd"], proto.encode({"cmd": "stats"}))
        frame = proto.IngestFrame(0, proto.Stamp(0, 0), "png", b"x").to_dict()
        assert REPLY_MARKER not in _zmtp1_exchange(ep["ingest"], proto.encode(frame))
        ctx: zmq.Context[Any] = zmq.Context()
        try:  # ZMTP/3 clients still get their answer
            reply = request(ctx, ep["cmd"], {"cmd": "stats"})
            assert reply is not None and reply["ok"]
        finally:
            ctx.destroy(linger=0)
    finally:
        svc.stop()

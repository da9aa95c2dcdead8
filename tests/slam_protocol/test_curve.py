"""Client CURVE keys: loading the files of ``slam keys generate`` and applying them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.auth

from slam_protocol.curve import CurveClientKeys, KeyFileError, apply_client_keys


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    zmq.auth.create_certificates(tmp_path, "server")
    zmq.auth.create_certificates(tmp_path, "robot")
    return tmp_path


def _curve_server(ctx: zmq.Context[Any], key_dir: Path) -> tuple[zmq.Socket[Any], str]:
    """A CURVE ROUTER with the server's keys (no ZAP handler: any client key is admitted)."""
    public, secret = zmq.auth.load_certificate(key_dir / "server.key_secret")
    server = ctx.socket(zmq.ROUTER)
    server.curve_secretkey, server.curve_publickey, server.curve_server = secret, public, True
    port = server.bind_to_random_port("tcp://127.0.0.1")
    return server, f"tcp://127.0.0.1:{port}"


def test_client_keys_load_from_certificate_files(key_dir: Path) -> None:
    keys = CurveClientKeys.load(key_dir / "robot.key_secret", key_dir / "server.key")
    robot_public, robot_secret = zmq.auth.load_certificate(key_dir / "robot.key_secret")
    server_public, _ = zmq.auth.load_certificate(key_dir / "server.key")
    assert (keys.public, keys.secret, keys.server_public) == (robot_public, robot_secret,
                                                              server_public)


def test_key_file_mistakes_are_refused(key_dir: Path) -> None:
    with pytest.raises(KeyFileError, match="no secret key"):
        CurveClientKeys.load(key_dir / "robot.key", key_dir / "server.key")
    with pytest.raises(KeyFileError, match="not found"):
        CurveClientKeys.load(key_dir / "missing.key_secret", key_dir / "server.key")
    (key_dir / "bad.key_secret").write_text("not a certificate")
    with pytest.raises(KeyFileError):
        CurveClientKeys.load(key_dir / "bad.key_secret", key_dir / "server.key")


def test_applied_keys_complete_the_curve_handshake(key_dir: Path,
                                                  ctx: zmq.Context[Any]) -> None:
    server, endpoint = _curve_server(ctx, key_dir)
    keys = CurveClientKeys.load(key_dir / "robot.key_secret", key_dir / "server.key")
    ephemeral = CurveClientKeys.ephemeral(keys.server_public)

    class TextKeys:  # keys may also be z85 text
        server_public = ephemeral.server_public.decode("ascii")
        public = ephemeral.public.decode("ascii")
        secret = ephemeral.secret.decode("ascii")

    for name, setup in (("loaded", keys.apply),
                        ("text", lambda s: apply_client_keys(s, TextKeys()))):
        client = ctx.socket(zmq.DEALER)
        try:
            setup(client)
            client.connect(endpoint)
            client.send(name.encode())
            assert server.poll(5000), f"{name}: the handshake did not complete"
            assert server.recv_multipart()[-1] == name.encode()
        finally:
            client.close(linger=0)
    server.close(linger=0)


def test_no_keys_leave_a_plain_socket(ctx: zmq.Context[Any]) -> None:
    sock = ctx.socket(zmq.DEALER)
    apply_client_keys(sock, None)
    assert sock.mechanism == zmq.NULL
    sock.close(linger=0)

"""CurveZMQ: key files, and a service that talks to admitted clients only."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.auth

from server import protocol as proto
from server.security import CurveClientKeys, CurveServerKeys, generate_keys
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

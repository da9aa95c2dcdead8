"""``slam serve`` and ``slam keys``: options, and a real process stopped by SIGTERM."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import zmq

from server.cli import build_options, connect_address, endpoint, main, register
from slam.errors import CalibrationError, ConfigError
from tests.server.service_helpers import Subscriber, request

REPO = Path(__file__).resolve().parents[2]
TUM1 = REPO / "datasets" / "calib" / "TUM1.yaml"


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True), [])
    return parser.parse_args(list(argv))


def test_endpoints_default_to_localhost_and_bare_ports_follow_bind() -> None:
    assert endpoint(None, "127.0.0.1", 5555) == "tcp://127.0.0.1:5555"
    assert endpoint("6000", "0.0.0.0", 5555) == "tcp://0.0.0.0:6000"
    assert endpoint(":6001", "127.0.0.1", 5555) == "tcp://127.0.0.1:6001"
    assert endpoint("ipc:///tmp/slam", "127.0.0.1", 5555) == "ipc:///tmp/slam"
    with pytest.raises(ConfigError):
        endpoint("localhost:80", "127.0.0.1", 5555)
    assert connect_address("tcp://0.0.0.0:5555") == "tcp://127.0.0.1:5555"
    assert connect_address("tcp://10.0.0.2:5555") == "tcp://10.0.0.2:5555"


def test_options_of_a_push_server_and_of_a_replay() -> None:
    opts, source = build_options(_parse("serve", "--source", "zmq:7000", "--sensor", "rgbd",
                                        "--calib", str(TUM1), "--bind", "0.0.0.0", "--paused"))
    assert source is None and opts.paused and opts.calibration.camera.width == 640
    assert (opts.pub_endpoint, opts.ingest_endpoint) == ("tcp://0.0.0.0:5555",
                                                         "tcp://0.0.0.0:7000")
    assert opts.config.tracking.wait_for_mapping is False  # live frames never wait
    assert opts.config.tracking.subpixel == "keyframes"  # and only keyframes are refined
    opts, source = build_options(_parse("serve", "--source", "synthetic:sideways?n=3",
                                        "--sensor", "rgbd", "--set", "features.n_features=500"))
    assert source is not None and source.length == 3 and not opts.realtime
    assert opts.config.tracking.wait_for_mapping is True and opts.config.features.n_features == 500
    assert opts.config.tracking.subpixel == "auto"
    opts, _ = build_options(_parse("serve", "--source", "synthetic:sideways?n=3", "--sensor",
                                   "rgbd", "--rate", "realtime", "--set", "tracking.subpixel=off"))
    assert opts.realtime and opts.config.tracking.wait_for_mapping is False
    assert opts.config.tracking.subpixel == "off"  # what the user asks for wins


@pytest.mark.parametrize(("argv", "error", "match"), [
    (("--source", "zmq:"), CalibrationError, "needs --calib"),
    (("--source", "zmq:", "--calib", str(TUM1), "--curve-clients", "x"), ConfigError, "both"),
    (("--source", "zmq:", "--calib", str(TUM1), "--max-message-bytes", "10"), ConfigError,
     "at least 1024"),
])
def test_bad_options_are_config_errors(argv: tuple[str, ...], error: type[Exception],
                                       match: str) -> None:
    with pytest.raises(error, match=match):
        build_options(_parse("serve", "--sensor", "rgbd", *argv))


def test_keys_generate_writes_the_key_set(tmp_path: Path, capsys: Any) -> None:
    assert main(["keys", "generate", "--out", str(tmp_path), "--client", "robot"]) == 0
    assert (tmp_path / "authorized_clients" / "robot.key").is_file()
    assert "server.key_secret" in capsys.readouterr().out
    assert main(["keys", "generate", "--out", str(tmp_path)]) == 2  # exists: ConfigError


def test_serve_process_replays_then_serves_until_sigterm() -> None:
    any_port = "tcp://127.0.0.1:*"
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve", "--source", "synthetic:sideways?n=12",
         "--sensor", "rgbd", "--pub", any_port, "--cmd", any_port, "--ingest", any_port],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("slam serve: pub tcp://127.0.0.1:"), line
        pub, cmd = line.split()[3], line.split()[5]
        sub = Subscriber(ctx, pub)  # the status topic says when the replay has finished
        try:
            assert sub.collect(lambda s: any(m["finished"] for m in s.of("status")), 60)
        finally:
            sub.close()
        stats = request(ctx, cmd, {"cmd": "stats"}, 10.0)
        assert stats is not None and stats["finished"] and stats["frames"] == 12
        assert proc.poll() is None  # still serving after the replay
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert "Traceback" not in err and "service stopped" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        ctx.destroy(linger=0)

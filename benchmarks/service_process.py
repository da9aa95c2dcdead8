"""A ``slam serve`` subprocess for benchmarks, and frames prepared for pushing.

Shared by ``bench_service`` and ``bench_soak``: free local ports, the environment and
launcher of the subprocess, its RSS, and frames compressed ahead of time.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clients.client import ClientError, SlamClient

REPO = Path(__file__).resolve().parents[1]

# `slam serve`, whether or not slam.cli.main registers it yet (server.cli provides it).
_LAUNCHER = """
import argparse, sys
import slam.cli.main as m
from server import cli
build = m.build_parser
def patched():
    p = build()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    if "serve" not in sub.choices:
        cli.register(sub, [m._verbosity_options()])
    return p
m.build_parser = patched
sys.exit(m.main(sys.argv[1:]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def subprocess_env() -> dict[str, str]:
    """The environment of a benchmark subprocess: this checkout first, the Numba cache."""
    env = dict(os.environ)
    env.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


@dataclass
class Server:
    """A ``slam serve`` subprocess on free local ports."""

    proc: subprocess.Popen[bytes]
    pub: str
    cmd: str
    ingest: str
    log_path: Path

    @classmethod
    def start(cls, serve_args: list[str], workdir: Path) -> Server:
        ports = [free_port() for _ in range(3)]
        pub, cmd, ingest = (f"tcp://127.0.0.1:{p}" for p in ports)
        argv = [sys.executable, "-c", _LAUNCHER, "-q", "serve", *serve_args,
                "--pub", pub, "--cmd", cmd, "--ingest", ingest]
        log_path = workdir / f"serve_{ports[0]}.log"
        with log_path.open("wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                    env=subprocess_env(), cwd=REPO)
        server = cls(proc, pub, cmd, ingest, log_path)
        server.wait_ready()
        return server

    def client(self, timeout_s: float = 10.0) -> SlamClient:
        return SlamClient(self.pub, self.cmd, self.ingest, timeout_s=timeout_s)

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        deadline = time.monotonic() + timeout_s
        with SlamClient(self.pub, self.cmd, self.ingest, timeout_s=1.0) as c:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"slam serve exited ({self.proc.returncode}):\n"
                                       + self.log_path.read_text()[-2000:])
                try:
                    c.stats()
                    return
                except ClientError:
                    time.sleep(0.2)
        raise RuntimeError("slam serve did not answer in time")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
        return float("nan")

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            try:
                with self.client(5.0) as c:
                    c.shutdown()
                self.proc.wait(30)
            except (ClientError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


class RssSampler(threading.Thread):
    def __init__(self, server: Server, period_s: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.server, self.period_s = server, period_s
        self.samples: list[float] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.period_s):
            self.samples.append(self.server.rss_mb())

    def stop(self) -> list[float]:
        self._stop_event.set()
        self.join(2)
        return self.samples


def _frames(uri: str, start: int, stop: int) -> Iterator[Any]:
    from slam.io.sources import open_source

    for i, frame in enumerate(open_source(uri, "rgbd")):
        if i >= stop:
            return
        if i >= start:
            yield frame


@dataclass
class EncodedFrame:
    """A frame compressed ahead of time (JPEG image, 16-bit PNG depth at 5000 per metre),
    so that the pusher's rate is not bounded by its own encoding."""

    image: bytes
    timestamp: float
    depth_m: bytes


def encoded_frames(uri: str, start: int, stop: int) -> list[EncodedFrame]:
    from clients.client import DEFAULT_DEPTH_SCALE, encode_depth, encode_image

    return [EncodedFrame(encode_image(f.image, "jpeg"), f.timestamp,
                         encode_depth(f.depth_m, "png", DEFAULT_DEPTH_SCALE))
            for f in _frames(uri, start, stop)]

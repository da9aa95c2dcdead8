"""A client needs neither the SLAM package, nor OpenCV, nor the server: the protocol and
the client library import in a fresh interpreter without them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = {"slam", "server", "cv2", "scipy", "torch"}


def _loaded_after(statement: str) -> set[str]:
    code = (f"import sys; {statement}; "
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True, env={"PYTHONPATH": str(REPO)}, timeout=120)
    return set(out.stdout.split())


def test_the_protocol_loads_neither_slam_nor_zmq_nor_opencv() -> None:
    assert _loaded_after("import slam_protocol") & (HEAVY | {"zmq"}) == set()


@pytest.mark.parametrize("module", ["clients", "clients.client", "clients.cli",
                                    "slam_protocol.curve"])
def test_the_client_library_loads_neither_slam_nor_opencv_nor_the_server(module: str) -> None:
    assert _loaded_after(f"import {module}") & HEAVY == set()

"""Reading regular files only, and atomic writes inside one directory: a failed or
killed save never leaves a broken map under the target's name."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from slam.errors import MapFileError
from slam.io import files as file_io
from slam.map.map import Map
from slam.map.persistence import load_map, save_map
from tests.map.test_persistence import (
    CALIB,
    REPO_ROOT,
    assert_maps_equal,
    build_map,
    rich_map,
)

log = logging.getLogger(__name__)


def test_read_regular_reads_exactly_the_file(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x" * 100_000)
    fd = os.open(tmp_path / "a", os.O_RDONLY)
    try:
        assert bytes(file_io.read_regular(fd)) == b"x" * 100_000
        with pytest.raises(OverflowError, match="100000 bytes"):
            file_io.read_regular(fd, max_bytes=99_999)
    finally:
        os.close(fd)


@pytest.mark.parametrize("kind", ["dir", "fifo", "device"])
def test_read_regular_refuses_other_files_at_once(tmp_path: Path, kind: str) -> None:
    path = {"dir": tmp_path, "fifo": tmp_path / "p", "device": Path("/dev/zero")}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        with pytest.raises(file_io.NotRegularFileError):
            file_io.read_regular(fd)
    finally:
        os.close(fd)


def test_write_atomically_stays_in_its_directory(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (d / "x").symlink_to(victim)
    fd = file_io.open_directory(d)
    try:
        file_io.write_atomically(fd, "x", [b"new ", memoryview(b"content")], mode=0o600)
    finally:
        os.close(fd)
    assert victim.read_text() == "precious"
    assert (d / "x").read_bytes() == b"new content" and not (d / "x").is_symlink()
    assert (d / "x").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in d.iterdir()) == ["x"]


def test_stale_temporary_files_of_dead_writers_are_removed(tmp_path: Path) -> None:
    dead = tmp_path / ".m.map.999999999.0badcafe.tmp"  # no such process
    huge = tmp_path / f".m.map.{'9' * 40}.0badcafe.tmp"
    mine = tmp_path / f".m.map.{os.getpid()}.0badcafe.tmp"
    for p in (dead, huge, mine):
        p.write_bytes(b"partial")
    file_io.write_file(tmp_path / "m.map", [b"map"])
    assert not dead.exists() and huge.exists() and mine.exists()
    assert (tmp_path / "m.map").read_bytes() == b"map"


# --- saving: errors and atomicity ----------------------------------------------------------
def test_save_errors(tmp_path: Path) -> None:
    m = build_map(3, 30, 50)
    with pytest.raises(MapFileError, match="does not exist"):
        save_map(tmp_path / "no" / "dir.map", m, CALIB, "rgbd")
    with pytest.raises(MapFileError, match="directory"):
        save_map(tmp_path, m, CALIB, "rgbd")
    with pytest.raises(TypeError, match="msgpack"):
        save_map(tmp_path / "x.map", m, CALIB, "rgbd", extra={"a": object()})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_failed_save_keeps_the_previous_file_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    path = tmp_path / "m.map"
    old = build_map(6, 120, 100, seed=1)
    save_map(path, old, CALIB, "rgbd")
    before = path.read_bytes()
    real_write = file_io._write_chunks

    def half_then_fail(fh: Any, chunks: list[Any]) -> None:
        real_write(fh, chunks[: len(chunks) // 2])
        raise error

    monkeypatch.setattr(file_io, "_write_chunks", half_then_fail)
    with pytest.raises(MapFileError if isinstance(error, OSError) else KeyboardInterrupt):
        save_map(path, rich_map(), CALIB, "rgbd")
    assert [p.name for p in tmp_path.iterdir()] == ["m.map"]
    assert path.read_bytes() == before
    assert_maps_equal(old, load_map(path).map)


_CHILD = """
import sys
import threading
sys.path.insert(0, {root!r})
from tests.map.test_persistence import CALIB, build_map
from slam.map.persistence import save_map
m = build_map(300, 30000, 1000)
print("ready", flush=True)
while True:
    save_map({target!r}, m, CALIB, "rgbd")
"""


def _kill_saver(target: Path, when: str, rng: np.random.Generator) -> None:
    """Start a process saving a large map to ``target`` in a loop and SIGKILL it, either
    while a temporary file is being written ("mid_write") or at a random moment."""
    proc = subprocess.Popen([sys.executable, "-c", _CHILD.format(root=str(REPO_ROOT),
                                                                  target=str(target))],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 20.0
        if when == "mid_write":  # a short window: watched without a pause (no event for it)
            while not any(p.suffix == ".tmp" for p in target.parent.iterdir()):
                assert time.monotonic() < deadline, "the saver never wrote a temporary file"
        else:  # a random moment to kill it: the sleep picks it, it waits for nothing
            time.sleep(float(rng.uniform(0.0, 0.6)))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_sigkill_during_saves_never_leaves_a_broken_map(tmp_path: Path) -> None:
    target = tmp_path / "live.map"
    rng = np.random.default_rng()
    _kill_saver(target, "mid_write", rng)  # killed during the very first save: no map yet
    assert not target.exists() and any(p.suffix == ".tmp" for p in tmp_path.iterdir())
    save_map(target, build_map(3, 30, 50), CALIB, "rgbd")  # a previous good file
    for trial, when in enumerate(["mid_write", "random", "random"]):
        _kill_saver(target, when, rng)
        n_points = load_map(target, sensor="rgbd").info.n_points  # old (30) or new (30k)
        temps = [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]
        log.warning("kill %d (%s): map with %d points, %d temporary files left", trial, when,
                    n_points, len(temps))
        assert n_points in (30, 30_000)
    # The next save removes what the killed savers left behind.
    save_map(target, build_map(3, 30, 50), CALIB, "rgbd")
    assert [p.name for p in tmp_path.iterdir()] == ["live.map"]


def test_a_live_savers_temporary_file_is_left_alone(tmp_path: Path) -> None:
    mine = tmp_path / f".m.map.{os.getpid()}.0badcafe.tmp"
    mine.write_bytes(b"partial")
    save_map(tmp_path / "m.map", Map(), CALIB, "rgbd")
    assert mine.exists()

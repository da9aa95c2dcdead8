"""Map files through the running service (issue 12, findings 2 and 3): a remote peer
cannot read, create or overwrite a file outside the map directory, a special file never
blocks the command thread, and a flood of saves is rate-limited while tracking goes on.
The map directory itself: ``tests/server/test_maps.py``."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Any

import pytest
import zmq

import slam.system
from tests.server.service_helpers import (
    ListSource,
    Subscriber,
    request,
    start_service,
    synthetic_run,
    wait_connected,
)


def _release(fifo: Path) -> None:
    """Give a reader blocked on ``fifo`` (an old server) its end of file."""
    with contextlib.suppress(OSError):
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def _saved(ctx: zmq.Context[Any], cmd: str, name: str) -> dict[str, Any] | None:
    st = request(ctx, cmd, {"cmd": "stats"})
    save = (st or {}).get("map_save") or {}
    return save if save.get("name") == name and save.get("state") != "saving" else None


@pytest.mark.timeout(120)
def test_save_map_never_writes_to_a_path(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    """The old API took paths: a peer overwrote any file the server could write."""
    frames, calibration, _ = synthetic_run()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    svc = start_service(ListSource(frames[:5], calibration))
    try:
        cmd = svc.endpoints["cmd"]
        for path in (victim, tmp_path / "new.map", tmp_path / ".." / "up.map"):
            reply = request(ctx, cmd, {"cmd": "save_map", "path": str(path)}, timeout_s=30.0)
            assert reply is not None and reply["ok"] is False, reply
        assert victim.read_text() == "precious"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["victim.txt"]
        assert not (tmp_path.parent / "up.map").exists()
    finally:
        svc.stop()


@pytest.mark.timeout(120)
def test_load_map_of_a_fifo_never_blocks_the_commands(ctx: zmq.Context[Any],
                                                       tmp_path: Path) -> None:
    """The old API opened a FIFO given as a path and blocked the command thread for good:
    ``stats`` and ``shutdown`` got no reply."""
    frames, calibration, _ = synthetic_run()
    fifo = tmp_path / "pipe.map"
    os.mkfifo(fifo)
    svc = start_service(ListSource(frames[:5], calibration))
    try:
        cmd = svc.endpoints["cmd"]
        reply = request(ctx, cmd, {"cmd": "load_map", "path": str(fifo)}, timeout_s=5.0)
        assert reply is not None and reply["ok"] is False
        assert request(ctx, cmd, {"cmd": "stats"}, timeout_s=5.0) is not None
    finally:
        _release(fifo)
        svc.stop()


@pytest.mark.timeout(120)
def test_remote_peers_cannot_reach_outside_the_map_directory(
    ctx: zmq.Context[Any], tmp_path: Path
) -> None:
    frames, calibration, _ = synthetic_run()
    map_dir, outside = tmp_path / "maps", tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.map").write_text("precious")
    svc = start_service(ListSource(frames[:10], calibration), map_dir=map_dir,
                        map_save_interval_s=0.0)
    try:
        cmd = svc.endpoints["cmd"]
        sub = Subscriber(ctx, svc.endpoints["pub"])
        wait_connected(sub)
        for bad in [{"cmd": "save_map", "name": "../outside/victim"},
                    {"cmd": "save_map", "name": str(outside / "new.map")},
                    {"cmd": "load_map", "name": "../outside/victim.map"},
                    {"cmd": "save_map", "name": "x" * 5000}, {"cmd": "save_map", "name": "a\0b"},
                    {"cmd": "load_map", "name": "..\\outside\\victim"}]:
            reply = request(ctx, cmd, bad)
            assert reply is not None and reply["ok"] is False, (bad, reply)
        assert (outside / "victim.map").read_text() == "precious"
        assert request(ctx, cmd, {"cmd": "list_maps"}) == {"v": 1, "ok": True, "maps": []}
        os.mkfifo(map_dir / "fifo.map")
        (map_dir / "zero.map").symlink_to("/dev/zero")
        (map_dir / "victim.map").symlink_to(outside / "victim.map")
        (map_dir / "dir.map").mkdir()
        for name in ("fifo", "zero", "victim", "dir", "missing"):
            reply = request(ctx, cmd, {"cmd": "load_map", "name": name}, timeout_s=10.0)
            assert reply == {"v": 1, "ok": False,
                             "error": f"load_map failed: no map named {name!r}"}
            assert request(ctx, cmd, {"cmd": "stats"}, timeout_s=5.0) is not None
        assert request(ctx, cmd, {"cmd": "save_map", "name": "victim"})["ok"]  # type: ignore[index]
        assert sub.collect(lambda s: _saved(ctx, cmd, "victim") is not None, 60.0)
        assert _saved(ctx, cmd, "victim")["state"] == "saved"  # type: ignore[index]
        assert (outside / "victim.map").read_text() == "precious"
        assert sorted(p.name for p in outside.iterdir()) == ["victim.map"]
        assert (map_dir / "victim.map").is_file() and not (map_dir / "victim.map").is_symlink()
        listed = request(ctx, cmd, {"cmd": "list_maps"})
        assert listed is not None and [m["name"] for m in listed["maps"]] == ["victim"]
        loaded = request(ctx, cmd, {"cmd": "load_map", "name": "victim"})
        assert loaded is not None and loaded["ok"] and loaded["name"] == "victim"
        sub.close()
    finally:
        svc.stop()


@pytest.mark.timeout(180)
def test_a_flood_of_saves_is_rate_limited_and_tracking_goes_on(
    ctx: zmq.Context[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """116 saves in 35 s cut tracking to 4 fps: now the save runs in the background
    (while it is held up here, frames keep being tracked) and the rest of the flood is
    refused (a save in progress, or too soon after the last one)."""
    gate = threading.Event()
    encode = slam.system.encode_snapshot

    def held_encode(*args: Any, **kwargs: Any) -> Any:
        assert gate.wait(60)
        return encode(*args, **kwargs)

    monkeypatch.setattr(slam.system, "encode_snapshot", held_encode)
    frames, calibration, _ = synthetic_run()
    svc = start_service(ListSource(frames, calibration), map_dir=tmp_path, paused=True,
                        realtime=True)
    try:
        cmd = svc.endpoints["cmd"]
        sub = Subscriber(ctx, svc.endpoints["pub"])
        wait_connected(sub)
        assert request(ctx, cmd, {"cmd": "resume"})["ok"]  # type: ignore[index]
        assert sub.collect(lambda s: len(s.of("pose")) >= 3, 30.0)
        replies = [request(ctx, cmd, {"cmd": "save_map", "name": f"m{i}"}) for i in range(30)]
        assert all(r is not None for r in replies)
        accepted = [r for r in replies if r and r["ok"]]
        assert accepted == [{"v": 1, "ok": True, "name": "m0", "state": "saving"}]
        assert all("in progress" in r["error"] or "one every" in r["error"]
                   for r in replies[1:] if r)
        n = len(sub.of("pose"))
        assert sub.collect(lambda s: len(s.of("pose")) >= n + 3, 30.0)  # tracking goes on
        assert (request(ctx, cmd, {"cmd": "stats"}) or {})["map_save"]["state"] == "saving"
        gate.set()
        assert sub.collect(lambda s: _saved(ctx, cmd, "m0") is not None, 60.0)
        assert _saved(ctx, cmd, "m0")["state"] == "saved"  # type: ignore[index]
        assert [p.name for p in tmp_path.iterdir()] == ["m0.map"]
        too_soon = request(ctx, cmd, {"cmd": "save_map", "name": "m1"})
        assert too_soon is not None and "one every 10 s" in too_soon["error"]
        sub.close()
    finally:
        gate.set()
        svc.stop()

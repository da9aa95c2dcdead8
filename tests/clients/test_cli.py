"""``slam-client`` against the fake service: output, one-line errors and exit codes."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

import slam_protocol as protocol
from clients.cli import EXIT_SERVER, EXIT_SOURCE, EXIT_TIMEOUT, main
from tests.clients.fake_server import FakeServer


def run(fake: FakeServer, *argv: str, timeout: float = 2.0) -> int:
    return main(["--pub", fake.pub, "--cmd", fake.cmd, "--ingest", fake.ingest,
                 "--timeout", str(timeout), *argv])


def test_stats(fake: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(fake, "stats") == 0
    out = capsys.readouterr().out.splitlines()
    assert "frames: 7" in out and "fps: 29.5" in out and 'state: "tracking"' in out


@pytest.mark.parametrize("cmd", ["pause", "resume", "reset", "shutdown"])
def test_simple_commands(fake: FakeServer, cmd: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(fake, cmd) == 0
    assert capsys.readouterr().out == "ok\n"
    assert fake.requests[-1] == {"v": 1, "cmd": cmd}


def test_map_files(fake: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(fake, "save-map", "office") == 0
    assert run(fake, "save-map", "office", "--wait", "0") == 0
    assert run(fake, "load-map", "office") == 0
    assert run(fake, "list-maps") == 0
    assert capsys.readouterr().out.splitlines() == [
        "saved map office (1234 bytes, 0.5 s)", "saving map office (see stats: map_save)",
        "loaded map office: 3 keyframes, 99 map points",
        "office\t1234\t2026-01-01T00:00:00+00:00"]
    assert run(fake, "load-map", "missing") == EXIT_SERVER
    err = capsys.readouterr().err
    assert err == "slam-client: service error: no map named 'missing'\n"


def test_no_answer_is_exit_3_in_one_line(fake: FakeServer,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    fake.mute = 1
    assert run(fake, "stats", timeout=0.3) == EXIT_TIMEOUT
    err = capsys.readouterr().err
    assert err.startswith("slam-client: timeout: stats: no reply") and err.count("\n") == 1


def test_echo_pose_json(fake: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    fake.stream_hz = 100.0
    assert run(fake, "echo", "pose", "--count", "4", "--json", "--wait", "3") == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 4
    seqs = [d["seq"] for d in lines]
    assert seqs == list(range(seqs[0], seqs[0] + 4))
    assert lines[0]["stamp"] == {"sec": 100 + seqs[0] // 30,
                                 "nanosec": pytest.approx((seqs[0] % 30) / 30 * 1e9, abs=2)}
    assert lines[0]["position"] == [seqs[0], 0.0, 0.0] and lines[0]["state"] == "tracking"


def test_echo_map_text(fake: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    update = protocol.MapUpdateMsg(5, np.arange(3), np.zeros((3, 3), np.float32),
                                   np.zeros((3, 3), np.uint8), removed_ids=np.array([9]))

    def feed() -> None:
        fake.wait_subscribed()
        fake.publish("map", update.to_dict())

    threading.Thread(target=feed, daemon=True).start()
    assert run(fake, "echo", "map", "--count", "1", "--wait", "3") == 0
    assert capsys.readouterr().out == "map 5 +3 ~0 -1 points\n"


def test_echo_gives_up_after_wait(fake: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(fake, "echo", "loop", "--wait", "0.2") == EXIT_TIMEOUT
    assert "no message" in capsys.readouterr().err


def test_snapshot_to_npz_and_json(fake: FakeServer, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    xyz = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
    fake.replies["snapshot"] = {
        "ok": True, "keyframes": [], "loops": [], "last_seq": 9,
        "points": {"ids": protocol.pack_array(np.array([3, 4], np.int64)),
                   "xyz": protocol.pack_array(xyz),
                   "rgb": protocol.pack_array(np.zeros((2, 3), np.uint8))},
        "trajectory": {"stamps": protocol.pack_array(np.zeros(1)),
                       "positions": protocol.pack_array(np.zeros((1, 3), np.float32)),
                       "orientations": protocol.pack_array(np.array([[0, 0, 0, 1]], np.float32))},
    }
    assert run(fake, "snapshot", "--out", str(tmp_path / "s.npz")) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "s.npz")["xyz"], xyz)
    assert run(fake, "snapshot", "--out", str(tmp_path / "s.json")) == 0
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["point_ids"] == [3, 4] and data["last_seq"] == 9
    assert "0 keyframes, 2 points, 1 poses, 0 loops, last seq 9" in capsys.readouterr().out


def test_push_images(fake: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    for i in range(5):
        cv2.imwrite(str(tmp_path / f"{i:03d}.png"), rng.integers(0, 255, (40, 56), np.uint8))
    fake.drop_seqs = {1}
    assert run(fake, "push", f"images:{tmp_path}", "--rate", "50", "--encoding", "png") == 0
    assert capsys.readouterr().out == ("5 frames sent, 4 tracked, 1 dropped, 0 refused, "
                                       "0 unanswered\n")
    assert len(fake.frames) == 5 and fake.frames[0]["image"].shape == (40, 56)
    assert [f["stamp"] for f in fake.frames] == pytest.approx([i / 50 for i in range(5)])


def test_push_bad_source_is_exit_4(fake: FakeServer, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert run(fake, "push", f"images:{tmp_path / 'none'}") == EXIT_SOURCE
    err = capsys.readouterr().err
    assert err.startswith("slam-client: error: images:") and err.count("\n") == 1


def test_usage_errors_exit_2(fake: FakeServer) -> None:
    with pytest.raises(SystemExit) as info:
        main(["echo", "poses"])
    assert info.value.code == 2
    assert run(fake, "stats", timeout=0) == 2

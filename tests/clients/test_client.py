"""SlamClient against the fake service: commands, subscriptions, latest pose, pushing frames."""

from __future__ import annotations

import ast
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

import slam_protocol as protocol
from clients import client as client_module
from clients.client import (
    ClientError,
    ClientTimeoutError,
    ServerError,
    SlamClient,
    encode_depth,
    encode_image,
)
from tests.clients.fake_server import FakeServer, pose_dict

LIBRARY_MODULES = ("client", "connection", "errors", "images", "pushing", "subscriptions")
"""The client library's modules (``cli`` also reads local sources with ``slam``, lazily;
``robot_example`` uses scipy)."""


@pytest.mark.parametrize("name", LIBRARY_MODULES)
def test_client_imports_only_zmq_numpy_stdlib_and_the_protocol(name: str) -> None:
    path = Path(client_module.__file__).with_name(f"{name}.py")
    tree = ast.parse(path.read_text())
    modules = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    roots = {str(m).split(".")[0] for m in modules} - set(sys.stdlib_module_names)
    assert roots <= {"numpy", "zmq", "slam_protocol", "clients", "cv2"}, roots


def test_stats_sends_a_versioned_command(client: SlamClient, fake: FakeServer) -> None:
    stats = client.stats()
    assert stats["frames"] == 7 and stats["map_points"] == 321
    assert "ok" not in stats and "v" not in stats
    assert fake.requests[-1] == {"v": 1, "cmd": "stats"}


def test_simple_commands_and_map_files(client: SlamClient, fake: FakeServer) -> None:
    client.pause()
    client.resume()
    client.reset()
    assert client.save_map("office") == {"name": "office", "state": "saving"}
    assert client.save_map("office", wait_s=5.0) == {"name": "office", "state": "saved",
                                                     "bytes": 1234, "seconds": 0.5}
    assert client.load_map("office")["keyframes"] == 3
    assert client.list_maps()[0]["name"] == "office"
    client.shutdown()
    assert [r["cmd"] for r in fake.requests] == ["pause", "resume", "reset", "save_map",
                                                 "save_map", "stats", "load_map",
                                                 "list_maps", "shutdown"]
    assert fake.requests[3]["name"] == "office" and "path" not in fake.requests[3]


def test_refused_command_raises_server_error_with_its_message(client: SlamClient) -> None:
    with pytest.raises(ServerError, match=r"no map named 'missing'") as info:
        client.load_map("missing")
    assert info.value.error == "no map named 'missing'"
    assert info.value.reply["ok"] is False
    assert isinstance(info.value, ClientError)


def test_timeout_renews_the_request_socket(fake: FakeServer) -> None:
    fake.mute = 1
    with SlamClient(fake.pub, fake.cmd, fake.ingest, timeout_s=0.3) as c:
        t0 = time.monotonic()
        with pytest.raises(ClientTimeoutError, match="stats: no reply"):
            c.stats()
        waited = time.monotonic() - t0
        assert 0.25 < waited < 10.0  # its deadline, and not for ever (wide: a loaded CPU)
        assert isinstance(ClientTimeoutError("x"), TimeoutError)
        assert c.stats()["frames"] == 7  # a stuck REQ socket would raise here instead
    assert len(fake.requests) == 2


def test_malformed_reply_is_a_client_error(client: SlamClient, fake: FakeServer) -> None:
    fake.garbage_reply = True
    with pytest.raises(ClientError, match="malformed reply to stats"):
        client.stats()
    assert client.stats()["frames"] == 7


def test_snapshot_unpacks_arrays(client: SlamClient, fake: FakeServer) -> None:
    xyz = np.arange(12, dtype=np.float32).reshape(4, 3)
    q = np.tile(np.array([0, 0, 0, 1], np.float32), (2, 1))
    fake.replies["snapshot"] = {
        "ok": True, "keyframes": [{"id": 0}], "loops": [], "last_seq": 41,
        "points": {"ids": protocol.pack_array(np.array([5, 6, 7, 9], np.int64)),
                   "xyz": protocol.pack_array(xyz),
                   "rgb": protocol.pack_array(np.full((4, 3), 200, np.uint8))},
        "trajectory": {"stamps": protocol.pack_array(np.array([1.0, 2.5])),
                       "positions": protocol.pack_array(np.zeros((2, 3), np.float32)),
                       "orientations": protocol.pack_array(q)},
    }
    snap = client.snapshot()
    np.testing.assert_array_equal(snap.point_ids, [5, 6, 7, 9])
    np.testing.assert_array_equal(snap.xyz, xyz)
    assert snap.rgb.shape == (4, 3) and snap.orientations.shape == (2, 4)
    np.testing.assert_array_equal(snap.stamps, [1.0, 2.5])
    assert snap.last_seq == 41 and snap.keyframes == [{"id": 0}]
    fake.replies["snapshot"] = {"ok": True, "points": {}}
    with pytest.raises(ClientError, match="malformed snapshot"):
        client.snapshot()


def test_subscribe_yields_typed_messages_of_its_topics(
    client: SlamClient, fake: FakeServer
) -> None:
    stream = client.subscribe("pose", "loop", timeout_s=3.0)
    loop = {"v": 1, "cur_kf": 9, "loop_kf": 1, "stamp": {"sec": 3, "nanosec": 0},
            "loop_stamp": {"sec": 1, "nanosec": 5}, "scale": 1.0, "n_matches": 80}

    def feed() -> None:
        fake.wait_subscribed()
        fake.publish("pose", pose_dict(0))
        fake.publish("status", {"v": 1, "fps": 1.0})  # not subscribed
        fake.publish("pose", b"\xc1garbage")  # skipped
        fake.publish("pose", {"v": 2, "seq": 1})  # unknown version: skipped
        fake.publish("loop", loop)
        fake.publish("pose", pose_dict(1))

    import threading

    threading.Thread(target=feed, daemon=True).start()
    got = [next(stream) for _ in range(3)]
    stream.close()
    assert [type(m).__name__ for m in got] == ["PoseMsg", "LoopMsg", "PoseMsg"]
    assert got[0].seq == 0 and got[2].seq == 1 and got[2].position == (1.0, 0.0, 0.0)
    assert got[1].cur_kf == 9 and got[1].loop_stamp.nanosec == 5


def test_subscribe_times_out_and_rejects_unknown_topics(client: SlamClient) -> None:
    with pytest.raises(ClientError, match="unknown topic 'poses'"):
        next(client.subscribe("poses"))
    with pytest.raises(ClientTimeoutError):
        next(client.subscribe("pose", timeout_s=0.2))


def test_latest_pose_skips_the_backlog_and_returns_at_once(
    client: SlamClient, fake: FakeServer
) -> None:
    assert client.latest_pose() is None  # nothing yet (and no wait for it)
    fake.wait_subscribed()
    fake.stream_hz = 300.0
    first = client.latest_pose(wait_s=2.0)
    assert first is not None
    last = first.seq + 150
    fake.stream_until = last
    fake.wait_streamed(last)  # 150 more poses went out while nobody asked
    pose = client.latest_pose()
    # Not the next pose of a backlog: one of the newest (a reader 100 poses behind
    # would be the bug; poses still in flight are the slack).
    assert pose is not None and first.seq + 50 <= pose.seq <= last
    later = client.latest_pose()  # the same, or newer: never older, never invented
    assert later is not None and pose.seq <= later.seq <= last


@dataclass
class Frame:
    image: np.ndarray
    timestamp: float
    depth_m: np.ndarray | None = None
    right: np.ndarray | None = None


def textured(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 255, (h, w), dtype=np.uint8), (5, 5), 1.5)


def test_push_frame_raw_is_byte_exact_with_depth(client: SlamClient, fake: FakeServer) -> None:
    image = textured()
    depth = np.random.default_rng(1).uniform(0.5, 4.0, image.shape).astype(np.float32)
    reply = client.push_frame(image, 12.25, depth=depth, encoding="raw")
    assert reply.ok and reply.seq == 0 and reply.pose is not None
    got = fake.frames[0]
    np.testing.assert_array_equal(got["image"], image)
    np.testing.assert_array_equal(got["depth"], depth)
    assert got["stamp"] == pytest.approx(12.25)


def test_push_frame_png_and_jpeg(client: SlamClient, fake: FakeServer) -> None:
    image = textured()
    depth = np.full(image.shape, 1.2346, np.float32)
    depth[0, 0] = np.nan
    client.push_frame(image, 1.0, depth=depth, right=image, encoding="png")
    np.testing.assert_array_equal(fake.frames[0]["image"], image)  # lossless
    np.testing.assert_allclose(fake.frames[0]["depth"][1:, 1:], 1.2346, atol=1 / 5000)
    assert fake.frames[0]["depth"][0, 0] == 0.0 and fake.frames[0]["has_right"]
    reply = client.push_frame(image, 2.0)
    assert reply.seq == 1 and fake.frames[1]["encoding"] == "jpeg"
    assert np.abs(fake.frames[1]["image"].astype(int) - image).mean() < 3.0


def test_push_frame_passes_encoded_bytes_through(client: SlamClient, fake: FakeServer) -> None:
    image = textured()
    jpeg = cv2.imencode(".jpg", image)[1].tobytes()
    client.push_frame(jpeg, 3.0)
    np.testing.assert_array_equal(fake.frames[0]["image"],
                                  cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_UNCHANGED))
    with pytest.raises(ClientError, match="raw frames must be arrays"):
        client.push_frame(jpeg, 3.0, encoding="raw")


def test_push_frame_dropped_and_refused(client: SlamClient, fake: FakeServer) -> None:
    fake.drop_seqs = {0}
    reply = client.push_frame(textured(), 1.0)
    assert reply.dropped and not reply.ok
    broken = np.zeros((4, 4, 2), np.uint8)
    with pytest.raises(ClientError, match="image must be"):
        client.push_frame(broken, 1.0)
    with pytest.raises(ClientError, match="unknown encoding"):
        encode_image(textured(), "webp")
    with pytest.raises(ClientError, match="depth must be"):
        encode_depth(np.zeros(3, np.float32), "png", 5000.0)


def test_push_frames_collects_one_reply_per_frame(client: SlamClient, fake: FakeServer) -> None:
    frames = [Frame(textured(seed=i), i / 30.0) for i in range(12)]
    fake.drop_seqs = {3, 4}
    t0 = time.monotonic()
    summary = client.push_frames(iter(frames), rate_hz=100.0)
    assert time.monotonic() - t0 > 0.1  # paced at 100 Hz
    assert summary.sent == 12 and summary.missing == 0
    assert sorted(r.seq for r in summary.replies) == list(range(12))
    assert summary.dropped == 2 and summary.tracked == 10 and summary.errors == []
    assert [f["stamp"] for f in fake.frames] == pytest.approx([f.timestamp for f in frames])


def test_push_frames_window_waits_for_replies(fake: FakeServer) -> None:
    with SlamClient(fake.pub, fake.cmd, fake.ingest, timeout_s=2.0) as c:
        summary = c.push_frames([Frame(textured(), 0.1 * i) for i in range(6)], max_in_flight=1)
    assert summary.tracked == 6 and summary.missing == 0


def test_bad_timeout_is_refused() -> None:
    with pytest.raises(ClientError, match="timeout"):
        SlamClient(timeout_s=0)


# --- against the real service (in-process, synthetic sequence) -------------------------
def _service(source: Any, sensor: str, calibration: Any, paused: bool, **kw: Any) -> Any:
    from server.service import ServiceOptions, SlamService

    opts = ServiceOptions(sensor=sensor, calibration=calibration, paused=paused,
                          pub_endpoint="tcp://127.0.0.1:*", cmd_endpoint="tcp://127.0.0.1:*",
                          ingest_endpoint="tcp://127.0.0.1:*", **kw)
    return SlamService(opts, source).start()


def _relative_positions(source: Any) -> np.ndarray:
    gt = source.ground_truth()
    T0_inv = np.linalg.inv(gt.T_world_cam[0])
    return (T0_inv[None] @ gt.T_world_cam)[:, :3, 3]


def test_end_to_end_replay_commands_and_map_files(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from clients.cli import main as cli_main
    from slam.io.sources import open_source

    source = open_source("synthetic:sideways?n=40", "rgbd")
    gt = _relative_positions(source)
    svc = _service(source, "rgbd", source.calibration, paused=True, map_dir=tmp_path)
    ep = svc.endpoints
    try:
        with SlamClient(ep["pub"], ep["cmd"], ep["ingest"], timeout_s=20.0) as c:
            stream = c.subscribe("pose", "status", timeout_s=30.0)
            assert c.stats()["paused"] is True
            # Paused, the service publishes only its status: once one arrives, the
            # subscription has reached the server, before the first pose.
            assert isinstance(next(stream), protocol.StatusMsg)
            c.resume()
            poses: list[protocol.PoseMsg] = []
            while len(poses) < 40:
                if isinstance(msg := next(stream), protocol.PoseMsg):
                    poses.append(msg)
            stream.close()
            assert [p.seq for p in poses] == list(range(40))
            assert all(p.state == "tracking" and p.latency_ms > 0 for p in poses[1:])
            est = np.array([p.position for p in poses])
            assert np.abs(est - gt).max() < 0.03
            stats = c.stats()
            assert stats["frames"] == 40 and stats["tracked_frames"] == 40
            snap = c.snapshot()
            assert len(snap.stamps) == 40 and len(snap.point_ids) > 100
            with pytest.raises(ServerError, match="start it with --source zmq"):
                c.push_frame(np.zeros((48, 64), np.uint8), 1.0)
            saved = c.save_map("m", wait_s=60.0)
            assert saved["bytes"] == (tmp_path / "m.map").stat().st_size > 0
            c.reset()
            assert c.stats()["map_points"] == 0
            assert c.load_map("m")["keyframes"] == stats["keyframes"]
            with pytest.raises(ServerError, match=r"unknown command 'fly'"):
                c.command("fly")
            assert cli_main(["--cmd", ep["cmd"], "stats"]) == 0
            assert "frames: 40" in capsys.readouterr().out.splitlines()
            c.shutdown()
        assert svc.wait(5.0)
    finally:
        svc.stop()


def test_end_to_end_pushed_frames_are_tracked() -> None:
    from slam.io.sources import open_source

    source = open_source("synthetic:sideways?n=15", "rgbd")
    gt = _relative_positions(source)
    svc = _service(None, "rgbd", source.calibration, paused=False)
    ep = svc.endpoints
    try:
        with SlamClient(ep["pub"], ep["cmd"], ep["ingest"], timeout_s=20.0) as c:
            summary = c.push_frames(source, encoding="png", max_in_flight=1)
        assert summary.sent == 15 and summary.missing == 0 and summary.dropped == 0
        replies = sorted(summary.replies, key=lambda r: r.seq)
        assert [r.seq for r in replies] == list(range(15))
        est = np.array([r.pose.position for r in replies])
        assert np.abs(est - gt).max() < 0.03
        assert all(r.pose.sender for r in replies)
    finally:
        svc.stop()


def test_end_to_end_curve_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import zmq.auth

    from clients.cli import main as cli_main
    from clients.client import load_curve_keys
    from server.security import CurveServerKeys
    from server.service import ServiceOptions, SlamService
    from slam.io.sources import open_source

    zmq.auth.create_certificates(tmp_path, "server")
    zmq.auth.create_certificates(tmp_path, "client")
    (tmp_path / "allowed").mkdir()
    (tmp_path / "allowed" / "client.key").write_bytes((tmp_path / "client.key").read_bytes())
    keys = CurveServerKeys.load(tmp_path / "server.key_secret", tmp_path / "allowed")
    source = open_source("synthetic:sideways?n=5", "rgbd")
    assert source.calibration is not None
    opts = ServiceOptions(sensor="rgbd", calibration=source.calibration, paused=True, curve=keys,
                          pub_endpoint="tcp://127.0.0.1:*", cmd_endpoint="tcp://127.0.0.1:*",
                          ingest_endpoint="tcp://127.0.0.1:*")
    svc = SlamService(opts, source).start()
    ep = svc.endpoints
    secret, public = str(tmp_path / "client.key_secret"), str(tmp_path / "server.key")
    try:
        curve = load_curve_keys(secret, public)
        with SlamClient(ep["pub"], ep["cmd"], ep["ingest"], curve, timeout_s=5.0) as c:
            assert c.stats()["paused"] is True
        plain = SlamClient(ep["pub"], ep["cmd"], ep["ingest"], timeout_s=0.5)
        with plain, pytest.raises(ClientTimeoutError):
            plain.stats()  # plain TCP never completes the CURVE handshake
        argv = ["--cmd", ep["cmd"], "--curve-secret", secret, "--curve-server", public, "stats"]
        assert cli_main(argv) == 0
        assert "paused: true" in capsys.readouterr().out.splitlines()
        assert cli_main(["--cmd", ep["cmd"], "--curve-secret", secret, "stats"]) == 2
        with pytest.raises(ClientError, match="no secret key"):
            load_curve_keys(public, public)
    finally:
        svc.stop()

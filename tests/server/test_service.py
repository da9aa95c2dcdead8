"""End-to-end tests of the service on the synthetic RGB-D sequence (exact ground truth)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import zmq

import slam_protocol as protocol
from server.service import SlamService
from slam.errors import ConfigError
from slam.geometry.conventions import q_xyzw_to_rotation
from tests.server.service_helpers import (
    N_FRAMES,
    ListSource,
    Subscriber,
    ingest_message,
    options,
    relative_truth,
    request,
    start_service,
    synthetic_run,
    wait_connected,
)

POSE_TOL_M = 0.015  # measured: at most 1.0 cm on this sequence (median 3 mm)
ANGLE_TOL_DEG = 1.0


def _rotation_error_deg(R_a: np.ndarray, R_b: np.ndarray) -> float:
    cos = (np.trace(R_a.T @ R_b) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def _check_pose(pose: dict[str, Any], T_true: np.ndarray) -> None:
    assert pose["position"] is not None, pose
    err = np.linalg.norm(np.array(pose["position"]) - T_true[:3, 3])
    assert err < POSE_TOL_M, (pose["seq"], err)
    R = q_xyzw_to_rotation(np.array(pose["orientation"]))
    assert _rotation_error_deg(R, T_true[:3, :3]) < ANGLE_TOL_DEG


def _finished(sub: Subscriber) -> bool:
    return any(s["finished"] for s in sub.of("status"))


def _replay(ctx: zmq.Context[Any], svc: SlamService, sub: Subscriber, n: int) -> None:
    """Resume a paused service and collect until its replay finished and ``n`` poses came."""
    wait_connected(sub)
    assert request(ctx, svc.endpoints["cmd"], {"cmd": "resume"}) == {"v": 1, "ok": True}
    assert sub.collect(lambda s: _finished(s) and len(s.of("pose")) >= n, 60.0)


def _apply_map_messages(messages: list[dict[str, Any]], upto: int) -> dict[int, np.ndarray]:
    points: dict[int, np.ndarray] = {}
    for m in sorted(messages, key=lambda m: m["seq"]):
        if m["seq"] >= upto:
            break
        msg = protocol.MapUpdateMsg.from_dict(m)
        if msg.reset:
            points.clear()
        for pid in msg.removed_ids.tolist():
            points.pop(pid)
        for pid, xyz in zip(msg.added_ids.tolist(), msg.added_xyz, strict=True):
            points[pid] = xyz
        for pid, xyz in zip(msg.moved_ids.tolist(), msg.moved_xyz, strict=True):
            points[pid] = xyz
    return points


def test_replay_publishes_every_pose_in_order_matching_ground_truth(ctx: zmq.Context[Any]
                                                                     ) -> None:
    frames, calibration, gt = synthetic_run()
    truth = relative_truth(gt)
    with start_service(ListSource(frames, calibration), paused=True) as svc:
        sub = Subscriber(ctx, svc.endpoints["pub"])
        stalled = ctx.socket(zmq.SUB)  # subscribes and never reads: must not slow anything
        stalled.setsockopt(zmq.RCVHWM, 1)
        stalled.setsockopt(zmq.SUBSCRIBE, b"")
        stalled.connect(svc.endpoints["pub"])
        _replay(ctx, svc, sub, N_FRAMES)

        poses = sub.of("pose")
        assert [p["seq"] for p in poses] == list(range(N_FRAMES))
        assert [p["source_index"] for p in poses] == list(range(N_FRAMES))
        for pose, frame in zip(poses, frames, strict=True):
            assert pose["state"] == "tracking" and pose["frame_id"] == "map"
            assert protocol.seconds_from_stamp(pose["stamp"]) == pytest.approx(frame.timestamp)
            assert 0.0 < pose["latency_ms"] < 5000.0 and pose["sender"] is None
            _check_pose(pose, truth[frame.index])
        assert poses[0]["keyframe"] is True

        stats = request(ctx, svc.endpoints["cmd"], {"cmd": "stats"})
        assert stats is not None and stats["ok"] and stats["finished"]
        assert (stats["frames"], stats["tracked_frames"], stats["errors"], stats["drops"]) == (
            N_FRAMES, N_FRAMES, 0, 0)
        assert stats["keyframes"] >= 2 and stats["map_points"] > 500
        assert 0 < stats["latency_ms_median"] <= stats["latency_ms_p99"]
        assert stats["last_seq"] == N_FRAMES - 1
        stalled.close()


def test_snapshot_matches_the_published_map_keyframes_and_trajectory(ctx: zmq.Context[Any]
                                                                     ) -> None:
    frames, calibration, gt = synthetic_run()
    truth = relative_truth(gt)
    with start_service(ListSource(frames, calibration), paused=True) as svc:
        sub = Subscriber(ctx, svc.endpoints["pub"])
        _replay(ctx, svc, sub, N_FRAMES)
        snap = request(ctx, svc.endpoints["cmd"], {"cmd": "snapshot"})
        assert snap is not None and snap["ok"] and snap["last_seq"] == N_FRAMES - 1
        assert sub.collect(lambda s: len(s.of("map")) >= snap["map_seq"], 5.0)

        # Points: the diffs received so far rebuild exactly the snapshot's points.
        ids = protocol.unpack_array(snap["points"]["ids"], np.int64)
        xyz = protocol.unpack_array(snap["points"]["xyz"], np.float32, (3,))
        rgb = protocol.unpack_array(snap["points"]["rgb"], np.uint8, (3,))
        rebuilt = _apply_map_messages(sub.of("map"), snap["map_seq"])
        assert sorted(rebuilt) == ids.tolist() and len(ids) > 500 and rgb.shape == xyz.shape
        assert np.array_equal(np.array([rebuilt[i] for i in ids.tolist()]), xyz)
        # ... and agree with the map within the publishing threshold.
        now = svc._system.snapshot(points=True)
        assert now.point_ids.tolist() == ids.tolist()
        assert np.abs(now.point_xyz - xyz).max() <= 0.0051

        # Keyframes: every keyframe of the snapshot was announced on the keyframe topic.
        announced = {k["id"] for k in sub.of("keyframe") if not k["moved"]}
        assert {k["id"] for k in snap["keyframes"]} <= announced
        assert len(snap["keyframes"]) >= 2

        # Trajectory: every frame, against the ground truth.
        stamps = protocol.unpack_array(snap["trajectory"]["stamps"], np.float64)
        positions = protocol.unpack_array(snap["trajectory"]["positions"], np.float32, (3,))
        quats = protocol.unpack_array(snap["trajectory"]["orientations"], np.float32, (4,))
        assert np.allclose(stamps, [f.timestamp for f in frames])
        assert np.abs(positions - truth[:, :3, 3]).max() < POSE_TOL_M
        assert np.allclose(np.linalg.norm(quats, axis=1), 1.0, atol=1e-5)

        # Images: JPEGs of the frames with the tracked keypoints inside them.
        images = sub.of("image")
        assert images and len(images) <= 5 * 10
        img = protocol.ImageMsg.from_dict(images[-1])
        decoded = cv2.imdecode(np.frombuffer(img.jpeg, np.uint8), cv2.IMREAD_UNCHANGED)
        assert decoded is not None and decoded.shape[:2] == (img.height, img.width) == (480, 640)
        assert len(img.uv) > 50 and np.all((img.uv >= 0) & (img.uv < [640, 480]))


def test_bad_source_frames_are_counted_and_skipped(ctx: zmq.Context[Any]) -> None:
    frames, calibration, gt = synthetic_run()
    truth = relative_truth(gt)
    broken = list(frames)
    broken[12] = type(frames[12])(12, frames[12].timestamp, None)  # type: ignore[arg-type]
    source = ListSource(tuple(broken), calibration, broken=frozenset({7}))
    with start_service(source, paused=True) as svc:
        sub = Subscriber(ctx, svc.endpoints["pub"])
        _replay(ctx, svc, sub, N_FRAMES - 2)
        poses = sub.of("pose")
        assert [p["seq"] for p in poses] == list(range(N_FRAMES - 2))
        indices = [p["source_index"] for p in poses]
        assert indices == [i for i in range(N_FRAMES) if i not in (7, 12)]
        for pose in poses:
            _check_pose(pose, truth[pose["source_index"]])
        stats = request(ctx, svc.endpoints["cmd"], {"cmd": "stats"})
        assert stats is not None and stats["errors"] == 2 and stats["frames"] == N_FRAMES - 2


def test_pushed_frames_are_tracked_and_answered_to_their_sender(ctx: zmq.Context[Any]) -> None:
    frames, _, gt = synthetic_run()
    truth = relative_truth(gt)
    with start_service(None) as svc:
        sub = Subscriber(ctx, svc.endpoints["pub"])
        wait_connected(sub)
        robot = ctx.socket(zmq.DEALER)
        robot.setsockopt(zmq.ROUTING_ID, b"robot-1")
        robot.setsockopt(zmq.LINGER, 0)
        robot.connect(svc.endpoints["ingest"])
        n = 20
        for i, frame in enumerate(frames[:n]):
            robot.send(protocol.encode(ingest_message(frame, 100 + i)))
            assert robot.poll(10000), f"no reply to frame {i}"
            reply = protocol.IngestReply.from_dict(protocol.decode(robot.recv()))
            assert reply.ok and reply.seq == 100 + i and not reply.dropped
            assert reply.pose is not None and reply.pose.seq == i
            assert reply.pose.sender == b"robot-1".hex() and reply.pose.source_index == 100 + i
            _check_pose(reply.pose.to_dict(), truth[i])
        assert sub.collect(lambda s: len(s.of("pose")) >= n, 5.0)
        assert [p["seq"] for p in sub.of("pose")] == list(range(n))
        # A malformed frame gets an error and changes nothing.
        robot.send(protocol.encode({"v": 1, "seq": 7, "stamp": {"sec": 0, "nanosec": 0},
                                    "encoding": "png", "image": b"not a png"}))
        assert robot.poll(5000)
        bad = protocol.decode(robot.recv())
        assert bad["ok"] is False and bad["seq"] == 7 and "PNG" in bad["error"]
        robot.close()


def _replies(sock: zmq.Socket[Any], n: int, timeout_s: float = 10.0
             ) -> list[protocol.IngestReply]:
    out: list[protocol.IngestReply] = []
    while len(out) < n and sock.poll(int(timeout_s * 1000)):
        out.append(protocol.IngestReply.from_dict(protocol.decode(sock.recv())))
    return out


def test_frames_pushed_faster_than_tracked_are_dropped_oldest_first(ctx: zmq.Context[Any]
                                                                     ) -> None:
    frames, _, gt = synthetic_run()
    truth = relative_truth(gt, origin=4)  # frames 0-3 are dropped: frame 4 starts the map
    messages = [protocol.encode(ingest_message(f, i)) for i, f in enumerate(frames)]
    with start_service(None, live_queue_size=2, paused=True) as svc:
        cmd = svc.endpoints["cmd"]
        sub = Subscriber(ctx, svc.endpoints["pub"])
        wait_connected(sub)
        robot = ctx.socket(zmq.DEALER)
        robot.setsockopt(zmq.LINGER, 0)
        robot.connect(svc.endpoints["ingest"])
        # Paused: of 6 frames the queue keeps the newest 2; the 4 oldest are dropped.
        for body in messages[:6]:
            robot.send(body)
        first = _replies(robot, 4)
        assert [(r.seq, r.dropped, r.ok) for r in first] == [(i, True, False) for i in range(4)]
        assert request(ctx, cmd, {"cmd": "resume"})["ok"]  # type: ignore[index]
        first += _replies(robot, 2)
        assert [(r.seq, r.ok) for r in first[4:]] == [(4, True), (5, True)]
        # One at a time, to time tracking; then at twice that rate: about every other
        # frame is dropped and poses keep flowing.
        for body in messages[6:10]:
            robot.send(body)
            first += _replies(robot, 1)
        track_s = float(np.median([r.pose.latency_ms for r in first[6:] if r.pose])) / 1e3
        replies: list[protocol.IngestReply] = []
        for body in messages[10:]:
            robot.send(body)
            t_next = time.monotonic() + max(0.002, track_s / 2)
            while time.monotonic() < t_next:
                if robot.poll(1):
                    replies.append(protocol.IngestReply.from_dict(protocol.decode(robot.recv())))
        replies += _replies(robot, len(messages) - 10 - len(replies))

        assert sorted(r.seq for r in replies) == list(range(10, len(messages)))  # one reply each
        dropped = [r for r in replies if r.dropped]
        tracked = [r for r in replies if r.ok]
        assert dropped and len(dropped) + len(tracked) == len(replies)
        assert all(not r.ok for r in dropped)
        stats = request(ctx, cmd, {"cmd": "stats"})
        assert stats is not None and stats["drops"] == 4 + len(dropped)
        assert stats["frames"] == 6 + len(tracked)
        poses = [r.pose for r in first[4:] + tracked if r.pose is not None]
        assert [p.seq for p in poses] == list(range(len(poses)))
        good = [p for p in poses if p.position is not None]
        assert len(good) >= 0.8 * len(poses)
        for pose in good:
            _check_pose(pose.to_dict(), truth[pose.source_index])
        assert sub.collect(lambda s: any(st["drops"] == stats["drops"] for st in s.of("status")),
                           3.0)
        assert max(st["queue_depth"]["frames"] for st in sub.of("status")) <= 2
        robot.close()


def test_pause_save_reset_load_and_shutdown(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    frames, calibration, gt = synthetic_run()
    truth = relative_truth(gt)
    svc = start_service(ListSource(frames, calibration), paused=True, map_dir=tmp_path)
    try:
        cmd = svc.endpoints["cmd"]
        sub = Subscriber(ctx, svc.endpoints["pub"])
        wait_connected(sub)
        assert request(ctx, cmd, {"cmd": "resume"})["ok"]  # type: ignore[index]
        assert sub.collect(lambda s: len(s.of("pose")) >= 15, 30.0)
        assert request(ctx, cmd, {"cmd": "pause"})["ok"]  # type: ignore[index]
        k = len(sub.of("status"))  # paused: the frame count stops (a frame in flight ends)

        def still(s: Subscriber) -> bool:
            last = s.of("status")[k:][-3:]
            return len(last) == 3 and all(m["paused"] for m in last) \
                and len({m["frames"] for m in last}) == 1

        assert sub.collect(still, 30.0)
        after = request(ctx, cmd, {"cmd": "stats"})
        assert after and after["paused"] and after["frames"] == sub.of("status")[-1]["frames"]

        saved = request(ctx, cmd, {"cmd": "save_map", "name": "room"})
        assert saved == {"v": 1, "ok": True, "name": "room", "state": "saving"}

        def save_done(s: Subscriber) -> bool:
            st = request(ctx, cmd, {"cmd": "stats"}) or {}
            return st.get("map_save", {}).get("state") == "saved"

        assert sub.collect(save_done, 60.0)
        st = request(ctx, cmd, {"cmd": "stats"})
        assert st and st["map_save"]["bytes"] == (tmp_path / "room.map").stat().st_size > 0
        n_kf = after["keyframes"]

        assert request(ctx, cmd, {"cmd": "reset"})["ok"]  # type: ignore[index]
        empty = request(ctx, cmd, {"cmd": "stats"})
        assert empty and empty["keyframes"] == 0 and empty["map_points"] == 0
        assert sub.collect(lambda s: any(m["reset"] for m in s.of("map")), 2.0)

        missing = request(ctx, cmd, {"cmd": "load_map", "name": "nope"})
        assert missing and missing["error"] == "load_map failed: no map named 'nope'"
        loaded = request(ctx, cmd, {"cmd": "load_map", "name": "room"})
        assert loaded and loaded["ok"] and loaded["keyframes"] == n_kf

        n_before = len(sub.of("pose"))
        assert request(ctx, cmd, {"cmd": "resume"})["ok"]  # type: ignore[index]
        assert sub.collect(lambda s: _finished(s) and len(s.of("pose")) >= N_FRAMES, 30.0)
        poses = sub.of("pose")
        assert [p["seq"] for p in poses] == list(range(len(poses)))  # no gap across reloads
        resumed = [p for p in poses[n_before:] if p["position"] is not None]
        assert len(resumed) >= 0.8 * (len(poses) - n_before)  # relocalised in the loaded map
        for pose in resumed:
            _check_pose(pose, truth[pose["source_index"]])

        assert request(ctx, cmd, {"cmd": "shutdown"}) == {"v": 1, "ok": True}
        assert svc.wait(5.0)
    finally:
        svc.stop()
    assert svc.pub is not None and svc.pub._sock.closed


def test_a_busy_port_is_a_config_error_and_leaves_nothing_open(ctx: zmq.Context[Any]) -> None:
    frames, calibration, _ = synthetic_run()
    blocker = ctx.socket(zmq.PUB)
    blocker.bind("tcp://127.0.0.1:*")
    busy = blocker.getsockopt_string(zmq.LAST_ENDPOINT)
    svc = SlamService(options(calibration, ingest_endpoint=busy), ListSource(frames, calibration))
    with pytest.raises(ConfigError, match="cannot bind"):
        svc.start()
    svc.stop()
    assert svc.ctx.closed and svc.commands is not None and svc.commands.sock.closed
    blocker.close()

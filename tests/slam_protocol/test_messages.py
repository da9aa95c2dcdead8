"""The v1 messages: round trips, the same wire maps as the hand-written codec of
schema v1, and the refusals of each message's own rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest

import slam_protocol as proto

GOLDEN = Path(__file__).with_name("golden_v1.json")
"""msgpack bytes (hex) written by the hand-written ``server/protocol.py`` of schema v1
(commit a9dc118) for the messages of :func:`_golden_messages`."""


def _roundtrip(msg: Any) -> Any:
    return type(msg).from_dict(proto.decode(proto.encode(msg.to_dict())))


def _golden_messages() -> dict[str, proto.Message]:
    s = proto.Stamp(1_700_000_000, 123_456_789)
    pose = proto.PoseMsg(3, s, (1.0, -2.0, 3.5), (0.0, 0.0, 0.0, 1.0), "tracking", 12.5, True,
                         7, "00ab", queued_ms=1.25)
    return {
        "pose": pose,
        "pose_lost": proto.PoseMsg(4, s, None, None, "lost", 1.0),
        "keyframe": proto.KeyframeMsg(2, s, (0.0, 1.0, 2.0), (0.5, 0.5, 0.5, 0.5), 321, True),
        "map": proto.MapUpdateMsg(
            5, np.array([3, 9], np.int64), np.array([[1, 2, 3], [4, 5, 6]], np.float32),
            np.array([[1, 2, 3], [250, 0, 7]], np.uint8), np.array([1]),
            np.array([[0.5, 0.25, 2]], np.float32), np.array([4, 5, 6]), reset=True),
        "loop": proto.LoopMsg(40, 3, s, proto.Stamp(5, 0), 1.0, 57),
        "status": proto.StatusMsg(29.5, 100, 98, "tracking", 12, 3400, 1, 0, 1,
                                  {"frames": 2, "mapping": 0, "loop": 1}, 5, False, True,
                                  errors=1, rss_mb=812.5, poses_dropped=2, stamps_skipped=3),
        "status_subs": proto.StatusMsg(0.0, 0, 0, "initializing", 0, 0, 0, 0, 1,
                                       {"frames": 0, "mapping": 0}, 0, True, False,
                                       subscribers=3),
        "image": proto.ImageMsg(1, proto.Stamp(2, 3), b"\xff\xd8jpeg", 640, 480,
                                np.array([[1.5, 2.5], [3.0, 4.0]], np.float32)),
        "command": proto.Command("save_map", {"name": "office"}),
        "command_stats": proto.Command("stats"),
        "reply_ok": proto.Reply(True, fields={"frames": 3, "fps": 29.5}),
        "reply_error": proto.Reply(False, "no such thing"),
        "ingest_raw": proto.IngestFrame(1, proto.Stamp(0, 5), "raw", bytes(12), (2, 2, 3),
                                        b"\0" * 16),
        "ingest_png": proto.IngestFrame(2, proto.Stamp(7, 8), "png", b"png", depth=b"dpng",
                                        depth_scale=5000.0, right=b"rpng"),
        "ingest_reply_pose": proto.IngestReply(9, True, pose=proto.PoseMsg(
            0, s, None, None, "initializing", 3.0)),
        "ingest_reply_dropped": proto.IngestReply(10, False, "dropped: late", dropped=True),
    }


def _typed(obj: Any) -> Any:
    """``obj`` with every scalar tagged by its type (so 1 and 1.0, or b'' and '', differ)."""
    if isinstance(obj, dict):
        return {k: _typed(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_typed(v) for v in obj]
    return (type(obj).__name__, obj)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and np.array_equal(a, b)
    return bool(a == b)


@pytest.mark.parametrize("name", sorted(_golden_messages()))
def test_wire_maps_match_the_v1_encoder(name: str) -> None:
    msg = _golden_messages()[name]
    golden = bytes.fromhex(json.loads(GOLDEN.read_text())[name])
    # the same keys, values and msgpack types (map key order carries no meaning)
    assert _typed(msgpack.unpackb(msg.encode(), raw=False)) == _typed(
        msgpack.unpackb(golden, raw=False))
    back = type(msg).decode(golden)
    assert all(_same(getattr(back, f), getattr(msg, f)) for f in msg.__dataclass_fields__)  # type: ignore[attr-defined]


def test_scalar_messages_survive_a_round_trip() -> None:
    messages = _golden_messages()
    for name in ("pose", "pose_lost", "keyframe", "loop", "status", "status_subs", "command",
                 "command_stats", "reply_ok", "reply_error", "ingest_reply_pose",
                 "ingest_reply_dropped"):
        assert _roundtrip(messages[name]) == messages[name], name


def test_array_messages_survive_a_round_trip() -> None:
    rng = np.random.default_rng(0)
    update = proto.MapUpdateMsg(5, np.array([3, 9], np.int64), rng.random((2, 3), np.float32),
                                np.array([[1, 2, 3], [250, 0, 7]], np.uint8), np.array([1]),
                                rng.random((1, 3), np.float32), np.array([4, 5, 6]), reset=True)
    back = _roundtrip(update)
    for name in ("added_ids", "added_xyz", "added_rgb", "moved_ids", "moved_xyz", "removed_ids"):
        a, b = getattr(update, name), getattr(back, name)
        assert np.array_equal(a, b) and a.dtype == b.dtype, name
    assert back.seq == 5 and back.reset and not back.is_empty()
    assert proto.MapUpdateMsg(6).is_empty() and _roundtrip(proto.MapUpdateMsg(6)).is_empty()
    image = proto.ImageMsg(1, proto.Stamp(2, 3), b"\xff\xd8jpeg", 640, 480,
                           np.array([[1.5, 2.5]], np.float32))
    back_img = _roundtrip(image)
    assert back_img.jpeg == image.jpeg and np.array_equal(back_img.uv, image.uv)
    frame = proto.IngestFrame(1, proto.Stamp(0, 5), "raw", bytes(12), (2, 2, 3), b"\0" * 16)
    back_frame = _roundtrip(frame)
    assert (back_frame.shape, back_frame.image, back_frame.depth) == ((2, 2, 3), bytes(12),
                                                                      b"\0" * 16)


def test_topics_name_their_message_classes() -> None:
    assert tuple(proto.TOPIC_TYPES) == proto.TOPICS
    assert proto.TOPIC_TYPES[proto.TOPIC_POSE] is proto.PoseMsg


@pytest.mark.parametrize(("body", "match"), [
    ({"v": 1}, "'cmd' is missing"),
    ({"v": 1, "cmd": 3}, "'cmd' must be a string"),
    ({"v": 1, "cmd": "explode"}, "unknown command 'explode'"),
    ({"v": 1, "cmd": "save_map"}, "'name' is missing"),
    ({"v": 1, "cmd": "load_map", "name": ""}, "map name"),
    ({"v": 1, "cmd": "load_map", "name": b"/x"}, "'name' must be a string"),
    ({"v": 1, "cmd": "save_map", "name": "a\0b"}, "map name"),
    ({"v": 1, "cmd": "save_map", "name": "../x"}, "map name"),
    ({"v": 1, "cmd": "save_map", "path": "/tmp/x.map"}, "not 'path'"),
    ({"v": 1, "cmd": "load_map", "name": "x", "path": "/tmp/x.map"}, "not 'path'"),
])
def test_commands_are_validated(body: dict[str, Any], match: str) -> None:
    with pytest.raises(proto.ProtocolError, match=match):
        proto.Command.from_dict(body)


def test_commands_ignore_unknown_extra_fields() -> None:
    command = proto.Command.from_dict({"v": 1, "cmd": "stats", "future": [1]})
    assert command == proto.Command("stats")
    saved = proto.Command.from_dict({"v": 1, "cmd": "save_map", "name": "lab.map", "x": 1})
    assert saved == proto.Command("save_map", {"name": "lab.map"})


def test_replies_keep_their_fields_and_default_their_error() -> None:
    assert proto.Reply.from_dict({"v": 1, "ok": True, "frames": 3, 7: "x"}).fields == {
        "frames": 3, 7: "x"}
    failed = proto.Reply.from_dict({"v": 1, "ok": False})
    assert failed.error == "failed" and failed.to_dict() == {"v": 1, "ok": False,
                                                             "error": "failed"}
    assert "error" not in proto.Reply(True, "ignored").to_dict()


@pytest.mark.parametrize(("change", "match"), [
    ({"encoding": "gif"}, "encoding"),
    ({"encoding": "raw"}, "shape"),
    ({"encoding": "raw", "shape": [480, 640, 4]}, "shape"),
    ({"encoding": "raw", "shape": [0, 640]}, "shape"),
    ({"encoding": "raw", "shape": [1 << 20, 640]}, "shape"),
    ({"image": "text"}, "'image' must be binary"),
    ({"seq": 1.5}, "'seq' must be an integer"),
    ({"stamp": 3}, "stamp"),
    ({"depth_scale": -1.0}, "depth_scale"),
    ({"depth_scale": float("inf")}, "depth_scale"),
    ({"depth": [1]}, "'depth' must be binary"),
])
def test_ingested_frames_are_validated(change: dict[str, Any], match: str) -> None:
    base = proto.IngestFrame(0, proto.Stamp(0, 0), "png", b"png").to_dict()
    with pytest.raises(proto.ProtocolError, match=match):
        proto.IngestFrame.from_dict({**base, **change})


def test_a_shape_matters_only_for_raw_frames() -> None:
    base = proto.IngestFrame(0, proto.Stamp(0, 0), "png", b"png").to_dict()
    assert "shape" not in base and "depth" not in base
    assert proto.IngestFrame.from_dict({**base, "shape": [2, 2]}).shape is None


def test_published_messages_are_validated() -> None:
    pose = proto.PoseMsg(0, proto.Stamp(0, 0), None, None, "lost", 1.0).to_dict()
    for change in ({"state": "dancing"}, {"position": [1, 2]}, {"position": [1, 2, "x"]},
                   {"position": [0, 0, float("inf")]}, {"latency_ms": "1"}, {"sender": 5}):
        with pytest.raises(proto.ProtocolError):
            proto.PoseMsg.from_dict({**pose, **change})
    update = proto.MapUpdateMsg(0, np.array([1, 2])).to_dict()  # 2 ids, no xyz
    with pytest.raises(proto.ProtocolError, match="differ in length"):
        proto.MapUpdateMsg.from_dict(update)
    keyframe = _golden_messages()["keyframe"].to_dict()
    with pytest.raises(proto.ProtocolError, match=r"'position' must be a list of 3 numbers$"):
        proto.KeyframeMsg.from_dict({**keyframe, "position": None})


def test_status_queue_depths_default_and_are_checked() -> None:
    status = _golden_messages()["status_subs"].to_dict()
    back = proto.StatusMsg.from_dict({**status, "queue_depth": {"loop": 2, 5: 1}})
    assert back.queue_depth == {"loop": 2, "frames": 0, "mapping": 0}
    with pytest.raises(proto.ProtocolError, match=r"'queue_depth\.frames' must be an integer"):
        proto.StatusMsg.from_dict({**status, "queue_depth": {"frames": "many"}})


def test_an_ingest_reply_names_the_field_of_its_pose() -> None:
    reply = _golden_messages()["ingest_reply_pose"].to_dict()
    reply["pose"]["state"] = "asleep"
    with pytest.raises(proto.ProtocolError, match=r"'pose\.state' must be one of"):
        proto.IngestReply.from_dict(reply)
    with pytest.raises(proto.ProtocolError, match="'pose' must be a map or null, got list"):
        proto.IngestReply.from_dict({**reply, "pose": [1]})

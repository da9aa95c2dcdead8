"""The wire format: round trips, byte layout of arrays and stamps, and refusals."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest

from server import protocol as proto

REPO = Path(__file__).resolve().parents[2]


def _roundtrip(msg: Any) -> Any:
    return type(msg).from_dict(proto.decode(proto.encode(msg.to_dict())))


def test_protocol_imports_neither_slam_nor_zmq_nor_opencv() -> None:
    code = ("import sys, server.protocol; print(sorted({m.split('.')[0] for m in sys.modules} "
            "& {'slam', 'zmq', 'cv2', 'scipy'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True, env={"PYTHONPATH": str(REPO)})
    assert out.stdout.strip() == "[]"


def test_scalar_messages_survive_a_round_trip() -> None:
    stamp = proto.Stamp(1_700_000_000, 123_456_789)
    messages = [
        proto.PoseMsg(3, stamp, (1.0, -2.0, 3.5), (0.0, 0.0, 0.0, 1.0), "tracking", 12.5, True, 7,
                  "00ab"),
        proto.PoseMsg(4, stamp, None, None, "lost", 1.0),
        proto.KeyframeMsg(2, stamp, (0.0, 1.0, 2.0), (0.5, 0.5, 0.5, 0.5), 321, moved=True),
        proto.LoopMsg(40, 3, stamp, proto.Stamp(5, 0), 1.0, 57),
        proto.StatusMsg(29.5, 100, 98, "tracking", 12, 3400, 1, 0, 1, {"frames": 2, "mapping": 0},
                    5, False, True, subscribers=3, errors=1),
        proto.Command("save_map", {"name": "office"}),
        proto.Reply(True, fields={"frames": 3}),
        proto.Reply(False, "no such thing"),
        proto.IngestReply(9, True, pose=proto.PoseMsg(0, stamp, None, None, "initializing", 3.0)),
        proto.IngestReply(10, False, "dropped: late", dropped=True),
    ]
    for msg in messages:
        assert _roundtrip(msg) == msg


def test_array_messages_survive_a_round_trip() -> None:
    rng = np.random.default_rng(0)
    update = proto.MapUpdateMsg(5, np.array([3, 9], np.int64), rng.random((2, 3), np.float32),
                            np.array([[1, 2, 3], [250, 0, 7]], np.uint8), np.array([1]),
                            rng.random((1, 3), np.float32), np.array([4, 5, 6]), reset=True)
    back = _roundtrip(update)
    for name in ("added_ids", "added_xyz", "added_rgb", "moved_ids", "moved_xyz", "removed_ids"):
        a, b = getattr(update, name), getattr(back, name)
        assert np.array_equal(a, b) and a.dtype == b.dtype, name
    assert back.seq == 5 and back.reset
    image = proto.ImageMsg(1, proto.Stamp(2, 3), b"\xff\xd8jpeg", 640, 480,
                       np.array([[1.5, 2.5]], np.float32))
    back_img = _roundtrip(image)
    assert back_img.jpeg == image.jpeg and np.array_equal(back_img.uv, image.uv)
    frame = proto.IngestFrame(1, proto.Stamp(0, 5), "raw", bytes(12), (2, 2, 3), b"\0" * 16)
    back_frame = _roundtrip(frame)
    assert (back_frame.shape, back_frame.image, back_frame.depth) == ((2, 2, 3), bytes(12),
                                                                      b"\0" * 16)


def test_packed_arrays_are_little_endian_raw_bytes() -> None:
    ids = np.array([1, -2], dtype=">i8")  # big-endian input still goes out little-endian
    assert proto.pack_array(ids) == struct.pack("<2q", 1, -2)
    xyz = np.array([[1.0, 2.0, 3.0]], np.float32)
    assert proto.pack_array(xyz) == struct.pack("<3f", 1.0, 2.0, 3.0)
    back = proto.unpack_array(struct.pack("<4f", 1, 2, 3, 4), np.float32, (2,))
    assert back.shape == (2, 2) and back.dtype == np.float32 and back.flags.writeable
    assert proto.unpack_array(b"", np.int64).shape == (0,)
    with pytest.raises(proto.ProtocolError, match="whole number"):
        proto.unpack_array(b"\0" * 10, np.float32, (3,))
    with pytest.raises(proto.ProtocolError, match="bin"):
        proto.unpack_array("text", np.int64)  # type: ignore[arg-type]


@pytest.mark.parametrize(("t", "sec", "nanosec"), [
    (0.0, 0, 0), (1.5, 1, 500_000_000), (1_305_031_102.175304, 1_305_031_102, 175_304_000),
    (1.9999999999, 2, 0), (-0.25, -1, 750_000_000),
])
def test_stamps_split_seconds_like_ros(t: float, sec: int, nanosec: int) -> None:
    stamp = proto.Stamp.from_seconds(t)
    assert abs(stamp.sec - sec) + abs(stamp.nanosec - nanosec) <= 1000  # float rounding
    assert proto.stamp_from_seconds(t) == stamp.to_dict()
    assert proto.seconds_from_stamp(stamp.to_dict()) == pytest.approx(t, abs=1e-6)


def test_malformed_stamps_are_refused() -> None:
    for bad in ({"sec": 1}, {"sec": 1, "nanosec": 1_000_000_000}, {"sec": "1", "nanosec": 0},
                [1, 2], {"sec": True, "nanosec": 0}):
        with pytest.raises(proto.ProtocolError):
            proto.seconds_from_stamp(bad)  # type: ignore[arg-type]
    with pytest.raises(proto.ProtocolError, match="finite"):
        proto.Stamp.from_seconds(float("nan"))


@pytest.mark.parametrize(("data", "match"), [
    (b"", "empty"),
    (b"\xc1", "not valid msgpack"),
    (msgpack.packb({"v": 1, "cmd": "stats"})[:-2], "not valid msgpack"),
    (msgpack.packb([1, 2]), "must be a msgpack map"),
    (msgpack.packb({"cmd": "stats"}), "'v'.*missing"),
    (msgpack.packb({"v": 2, "cmd": "stats"}), "unsupported schema version 2"),
    (msgpack.packb({"v": True}), "must be an integer"),
    (msgpack.packb({"v": "1"}), "must be an integer"),
    (msgpack.packb({"v": 1}) + b"\x00", "trailing"),
    (b"\xc6\xff\xff\xff\xff", "not valid msgpack"),  # bin32 declaring 4 GiB
    (b"\xdd\xff\xff\xff\xff", "not valid msgpack"),  # array32 declaring 4 G items
    (b"\x91" * 100_000, "not valid msgpack"),  # nested beyond the unpacker's stack
])
def test_decode_refuses_what_is_not_a_message(data: bytes, match: str) -> None:
    with pytest.raises(proto.ProtocolError, match=match):
        proto.decode(data)


def test_decode_refuses_oversize_messages_before_unpacking() -> None:
    data = proto.encode({"cmd": "stats", "pad": b"x" * 2000})
    assert proto.decode(data, max_bytes=len(data))["cmd"] == "stats"
    with pytest.raises(proto.ProtocolError, match="exceeds the limit of 100 bytes"):
        proto.decode(data, max_bytes=100)
    with pytest.raises(proto.ProtocolError, match="must be bytes"):
        proto.decode("text")  # type: ignore[arg-type]


def test_encode_sets_the_schema_version() -> None:
    decoded = proto.decode(proto.encode({"cmd": "stats"}))
    assert decoded == {"v": proto.SCHEMA_VERSION, "cmd": "stats"}


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
    ({"depth": [1]}, "'depth' must be binary"),
])
def test_ingested_frames_are_validated(change: dict[str, Any], match: str) -> None:
    base = proto.IngestFrame(0, proto.Stamp(0, 0), "png", b"png").to_dict()
    with pytest.raises(proto.ProtocolError, match=match):
        proto.IngestFrame.from_dict({**base, **change})


def test_published_messages_are_validated() -> None:
    pose = proto.PoseMsg(0, proto.Stamp(0, 0), None, None, "lost", 1.0).to_dict()
    for change in ({"state": "dancing"}, {"position": [1, 2]}, {"position": [1, 2, "x"]},
                   {"position": [0, 0, float("inf")]}, {"latency_ms": "1"}, {"sender": 5}):
        with pytest.raises(proto.ProtocolError):
            proto.PoseMsg.from_dict({**pose, **change})
    update = proto.MapUpdateMsg(0, np.array([1, 2])).to_dict()  # 2 ids, no xyz
    with pytest.raises(proto.ProtocolError, match="differ in length"):
        proto.MapUpdateMsg.from_dict(update)

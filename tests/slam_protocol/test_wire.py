"""Bytes on the wire: byte layout of arrays and stamps, and what decode refuses."""

from __future__ import annotations

import struct

import msgpack
import numpy as np
import pytest

import slam_protocol as proto


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
    # float seconds near 1.3e9 carry about 0.2 us of resolution: allow 1 us
    assert abs(stamp.sec - sec) + abs(stamp.nanosec - nanosec) <= 1000
    assert proto.stamp_from_seconds(t) == stamp.to_dict()
    assert proto.seconds_from_stamp(stamp.to_dict()) == pytest.approx(t, abs=1e-6)


def test_malformed_stamps_are_refused() -> None:
    for bad in ({"sec": 1}, {"sec": 1, "nanosec": 1_000_000_000}, {"sec": "1", "nanosec": 0},
                [1, 2], {"sec": True, "nanosec": 0}):
        with pytest.raises(proto.ProtocolError):
            proto.seconds_from_stamp(bad)  # type: ignore[arg-type]
    with pytest.raises(proto.ProtocolError, match="finite"):
        proto.Stamp.from_seconds(float("nan"))
    with pytest.raises(proto.ProtocolError, match=r"'loop_stamp\.nanosec' is missing"):
        proto.Stamp.from_dict({"sec": 1}, "loop_stamp")


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
    (b"\xd4\x01\x00", "must be a msgpack map"),  # ext types are not maps
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


def test_decode_accepts_non_string_map_keys() -> None:
    decoded = proto.decode(msgpack.packb({"v": 1, 7: "seven", b"k": 1}, use_bin_type=True))
    assert decoded[7] == "seven" and decoded[b"k"] == 1


def test_encode_sets_the_schema_version() -> None:
    decoded = proto.decode(proto.encode({"cmd": "stats"}))
    assert decoded == {"v": proto.SCHEMA_VERSION, "cmd": "stats"}

"""The bounded msgpack walker of map payloads: the same values as msgpack, skipping
without building, limits on every container and section."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from slam.map.msgpack_reader import Cursor

VALUES: list[Any] = [0, 127, 128, -1, -32, -33, 255, 2**16, 2**32, 2**63 - 1, -2**63, 1.5,
                     None, True, False, "", "x" * 31, "y" * 300, "z" * 70_000, b"",
                     b"b" * 300, b"c" * 70_000, [], [1, [2, [3]]], {}, {"a": {"b": [1, 2]}},
                     list(range(20)), {str(i): i for i in range(20)},
                     msgpack.ExtType(5, b"abc"), msgpack.ExtType(1, b"x" * 300)]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_skip_and_value_agree_with_msgpack(value: Any) -> None:
    data = msgpack.packb(value, use_bin_type=True) + b"\xc0"
    cur = Cursor(data)
    cur.skip(len(data))
    assert cur.pos == len(data) - 1
    assert Cursor(data).value(len(data)) == value


def test_typed_reads() -> None:
    data = msgpack.packb({"k": [1, -2, 2**40], "d": b"\x00\x01"}, use_bin_type=True)
    cur = Cursor(data)
    assert cur.map_header(2) == 2 and cur.string(8) == "k"
    assert [cur.integer() for _ in range(cur.array_header(3))] == [1, -2, 2**40]
    assert cur.string(8) == "d" and bytes(cur.binary()) == b"\x00\x01"
    assert cur.pos == len(data)


@pytest.mark.parametrize("data, call, match", [
    (msgpack.packb(list(range(10))), lambda c: c.array_header(5), "at most 5"),
    (msgpack.packb({"a": 1, "b": 2}), lambda c: c.map_header(1), "at most 1"),
    (msgpack.packb("x" * 40), lambda c: c.string(16), "at most 16"),
    (msgpack.packb(1.5), lambda c: c.integer(), "integer"),
    (msgpack.packb("s"), lambda c: c.binary(), "bin"),
    (b"\xc1", lambda c: c.skip(10), "invalid"),
    (b"\xdd\xff\xff\xff\xff", lambda c: c.skip(100), "truncated|longer"),
    (b"\xdc\x00\x30" + b"\x90" * 48, lambda c: c.value(10), "longer than 10"),
    (b"\xc6\x00\x00\x00\x10ab", lambda c: c.binary(), "truncated"),
])
def test_malformed_or_oversized_input_is_a_value_error(data: bytes, call: Any,
                                                       match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call(Cursor(data))


def test_a_deep_nest_of_empty_containers_is_never_built() -> None:
    """One million one-byte arrays inside one array32: skipping builds nothing."""
    data = b"\xdd" + (1_000_000).to_bytes(4, "big") + b"\x90" * 1_000_000
    cur = Cursor(data)
    cur.skip(len(data))
    assert cur.pos == len(data)
    with pytest.raises(ValueError, match="longer than"):
        Cursor(data).value(1 << 16)

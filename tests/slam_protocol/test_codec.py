"""The generic codec, one behaviour per test, on a message declared here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

import msgpack
import numpy as np
import pytest
from numpy.typing import NDArray

from slam_protocol import ProtocolError, Stamp
from slam_protocol.codec import (
    Array,
    Bin,
    Bool,
    Int,
    Message,
    Num,
    Rest,
    Str,
    Time,
    Vec,
    wire_fields,
)


@dataclass(eq=False)
class Probe(Message):
    """A message exercising every kind of field."""

    n: Annotated[int, Int()]
    name: Annotated[str, Str(choices=("a", "b"))]
    stamp: Annotated[Stamp, Time()]
    where: Annotated[tuple[float, ...] | None, Vec(3, null=True)]
    ids: Annotated[NDArray[np.int64], Array(np.int64, key="inner.ids", required=True)] = field(
        default_factory=lambda: np.zeros(0, np.int64))
    ratio: Annotated[float, Num()] = 1.0
    flag: Annotated[bool, Bool(omit=False)] = False
    blob: Annotated[bytes | None, Bin(null=True, omit=None)] = None
    note: Annotated[str | None, Str(null=True)] = None


def _probe_map(**change: Any) -> dict[str, Any]:
    d = Probe(1, "a", Stamp(2, 3), (1.0, 2.0, 3.0), np.array([4, 5])).to_dict()
    d.update(change)
    return d


def test_encode_writes_v_and_every_field_by_its_wire_type() -> None:
    assert _probe_map() == {
        "v": 1, "n": 1, "name": "a", "stamp": {"sec": 2, "nanosec": 3},
        "where": [1.0, 2.0, 3.0], "inner": {"ids": np.array([4, 5], "<i8").tobytes()},
        "ratio": 1.0, "note": None,  # flag (False) and blob (None) are left out
    }
    assert Probe(1, "a", Stamp(0, 0), None, blob=b"x", flag=True).to_dict()["blob"] == b"x"


def test_a_decoded_message_equals_the_encoded_one() -> None:
    msg = Probe(7, "b", Stamp(1, 2), None, np.array([9]), 0.5, True, b"\0", "hi")
    back = Probe.decode(msg.encode())
    assert (back.n, back.name, back.stamp, back.where, back.ratio, back.flag, back.blob,
            back.note) == (7, "b", Stamp(1, 2), None, 0.5, True, b"\0", "hi")
    assert back.ids.dtype == np.int64 and back.ids.tolist() == [9]


def test_a_missing_field_is_named() -> None:
    d = _probe_map()
    del d["n"]
    with pytest.raises(ProtocolError, match=r"^field 'n' is missing$"):
        Probe.from_dict(d)


def test_a_missing_nested_field_is_named_with_its_path() -> None:
    with pytest.raises(ProtocolError, match=r"^field 'inner.ids' is missing$"):
        Probe.from_dict(_probe_map(inner={}))
    with pytest.raises(ProtocolError, match=r"^field 'inner' must be a map, got int$"):
        Probe.from_dict(_probe_map(inner=3))


def test_missing_optional_fields_take_their_defaults() -> None:
    d = _probe_map()
    for key in ("ratio", "note", "where"):
        del d[key]
    msg = Probe.from_dict(d)
    assert (msg.ratio, msg.flag, msg.blob, msg.note, msg.where) == (1.0, False, None, None, None)


@pytest.mark.parametrize(("change", "match"), [
    ({"n": 1.0}, "^field 'n' must be an integer, got float$"),
    ({"n": True}, "^field 'n' must be an integer, got bool$"),
    ({"n": None}, "^field 'n' must be an integer, got NoneType$"),
    ({"name": "c"}, r"^field 'name' must be one of \['a', 'b'\], got 'c'$"),
    ({"name": b"a"}, "^field 'name' must be a string, got bytes$"),
    ({"stamp": [1, 2]}, "^field 'stamp' must be a map"),
    ({"where": [1, 2]}, "^field 'where' must be a list of 3 numbers or null$"),
    ({"where": [1, 2, float("nan")]}, "^field 'where' must be finite$"),
    ({"inner": {"ids": "x"}}, r"^field 'inner.ids' must be binary \(msgpack bin\), got str$"),
    ({"inner": {"ids": b"\0" * 7}}, "^field 'inner.ids': 7 bytes are not a whole number"),
    ({"ratio": "1"}, "^field 'ratio' must be a number, got str$"),
    ({"flag": 1}, "^field 'flag' must be a boolean, got int$"),
    ({"blob": "x"}, r"^field 'blob' must be binary \(msgpack bin\) or null, got str$"),
])
def test_a_field_of_the_wrong_type_is_named_with_what_was_expected(
        change: dict[str, Any], match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        Probe.from_dict(_probe_map(**change))


def test_the_longest_wrong_choice_quoted_is_short() -> None:
    with pytest.raises(ProtocolError) as info:
        Probe.from_dict(_probe_map(name="x" * 10_000))
    assert len(str(info.value)) < 100


def test_unknown_fields_are_ignored() -> None:
    msg = Probe.from_dict(_probe_map(future=[1, 2], inner={"ids": b"", "more": 1}, **{"7": 0}))
    assert msg.n == 1 and msg.ids.shape == (0,)


def test_null_is_refused_where_not_declared_and_read_as_none_where_it_is() -> None:
    assert Probe.from_dict(_probe_map(note=None, blob=None)).note is None
    with pytest.raises(ProtocolError, match="'ratio' must be a number, got NoneType"):
        Probe.from_dict(_probe_map(ratio=None))


def test_a_wrong_version_is_refused() -> None:
    for v in (2, 0, "1", None):
        data = msgpack.packb(_probe_map(v=v), use_bin_type=True)
        with pytest.raises(ProtocolError, match=r"version|'v'"):
            Probe.decode(data)


def test_an_oversize_message_is_refused_before_decoding() -> None:
    data = Probe(1, "a", Stamp(0, 0), None, np.arange(1000)).encode()
    assert Probe.decode(data, max_bytes=len(data)).ids.shape == (1000,)
    with pytest.raises(ProtocolError, match=f"message of {len(data)} bytes exceeds the limit"):
        Probe.decode(data, max_bytes=len(data) - 1)


def test_a_message_must_be_a_map() -> None:
    with pytest.raises(ProtocolError, match="Probe must be a map, got list"):
        Probe.from_dict([1, 2])  # type: ignore[arg-type]


def test_the_rest_of_the_fields_travel_at_the_top_level() -> None:
    @dataclass
    class Open(Message):
        kind: Annotated[str, Str()]
        extra: Annotated[dict[str, Any], Rest()] = field(default_factory=dict)

    assert Open("x", {"a": 1, "kind": "clash"}).to_dict() == {"a": 1, "v": 1, "kind": "x"}
    assert Open.from_dict({"v": 1, "kind": "y", "a": [2], 3: None}).extra == {"a": [2], 3: None}


def test_a_field_without_a_spec_is_a_declaration_error() -> None:
    @dataclass
    class Undeclared(Message):
        n: int

    with pytest.raises(TypeError, match=r"Undeclared\.n needs exactly one wire Spec"):
        wire_fields(Undeclared)

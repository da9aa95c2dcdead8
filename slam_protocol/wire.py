"""Bytes on the wire: one msgpack map per message, versioned, decoded with limits.

Arrays travel as msgpack ``bin`` values of little-endian raw bytes (the field says
dtype and shape); stamps as ROS-style ``{sec, nanosec}`` maps. Never pickle.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import msgpack
import numpy as np
from numpy.typing import NDArray

SCHEMA_VERSION = 1
"""The ``v`` of every message. Fields may be added within a version (readers ignore
fields they do not know); removing one or changing its type, unit or meaning bumps it."""
MAX_MESSAGE_BYTES = 32 * 1024 * 1024
"""Default size limit of a decoded message (bytes): requests and pushed frames above it
are refused before unpacking."""
NANOS_PER_SECOND = 1_000_000_000
_ERROR_TEXT_CHARS = 200  # longest msgpack error text quoted in a ProtocolError


class ProtocolError(ValueError):
    """A message is not valid under this schema (the text names the field and what was
    expected)."""


def encode(obj: Mapping[str, Any]) -> bytes:
    """msgpack bytes of a message map; ``v`` is set to :data:`SCHEMA_VERSION` when absent."""
    body = dict(obj)
    body.setdefault("v", SCHEMA_VERSION)
    return bytes(msgpack.packb(body, use_bin_type=True))


def decode(data: bytes | bytearray | memoryview, max_bytes: int = MAX_MESSAGE_BYTES
           ) -> dict[Any, Any]:
    """The message map of ``data`` (at most ``max_bytes`` bytes).

    Every msgpack length is capped by the size of ``data``, map keys may be any
    msgpack scalar (``strict_map_key=False``) and ext types are refused.

    :raises ProtocolError: oversize data, data that is not exactly one msgpack value,
        a value that is not a map, a missing or unknown ``v``.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ProtocolError(f"a message must be bytes, got {type(data).__name__}")
    n = len(data)
    if n > max_bytes:
        raise ProtocolError(f"message of {n} bytes exceeds the limit of {max_bytes} bytes")
    if n == 0:
        raise ProtocolError("empty message (expected a msgpack map)")
    try:
        obj = msgpack.unpackb(
            data, raw=False, strict_map_key=False, use_list=True,
            max_bin_len=n, max_str_len=n, max_array_len=n, max_map_len=n, max_ext_len=n,
        )
    except msgpack.ExtraData:
        raise ProtocolError("trailing bytes after the msgpack value") from None
    except Exception as exc:
        raise ProtocolError(f"not valid msgpack ({_short(exc)})") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"a message must be a msgpack map, got {type(obj).__name__}")
    check_version(obj)
    return obj


def check_version(obj: Mapping[Any, Any]) -> None:
    """Raise :class:`ProtocolError` unless ``obj['v']`` is :data:`SCHEMA_VERSION`."""
    if "v" not in obj:
        raise ProtocolError("field 'v' (schema version) is missing")
    v = obj["v"]
    if not is_int(v):
        raise ProtocolError(f"field 'v' must be an integer, got {type(v).__name__}")
    if v != SCHEMA_VERSION:
        raise ProtocolError(f"unsupported schema version {v} (this end speaks "
                            f"{SCHEMA_VERSION})")


def is_int(x: Any) -> bool:
    """True for a Python int that is not a bool (msgpack integers decode to int)."""
    return isinstance(x, int) and not isinstance(x, bool)


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:_ERROR_TEXT_CHARS]


# --- arrays -------------------------------------------------------------------------
def pack_array(a: NDArray[Any]) -> bytes:
    """Little-endian raw bytes of ``a`` (C order); the reader knows dtype and shape."""
    arr = np.asarray(a)
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()


def unpack_array(b: bytes, dtype: Any, shape_tail: tuple[int, ...] = ()) -> NDArray[Any]:
    """Array (N, *shape_tail) of ``dtype`` (native byte order, writeable) from
    little-endian bytes.

    :raises ProtocolError: ``b`` is not bytes or not a whole number of rows.
    """
    if not isinstance(b, bytes | bytearray | memoryview):
        raise ProtocolError(f"an array must be msgpack bin, got {type(b).__name__}")
    dt = np.dtype(dtype).newbyteorder("<")
    row = dt.itemsize * math.prod(shape_tail)
    if row == 0 or len(b) % row:
        raise ProtocolError(f"{len(b)} bytes are not a whole number of {dt.name} rows "
                            f"of shape {shape_tail}")
    flat = np.frombuffer(b, dtype=dt)
    return flat.reshape(-1, *shape_tail).astype(np.dtype(dtype), copy=True)


# --- stamps -------------------------------------------------------------------------
class Stamp(NamedTuple):
    """A time stamp as ROS writes it: whole seconds and nanoseconds (0..999999999)."""

    sec: int
    nanosec: int

    @classmethod
    def from_seconds(cls, t: float) -> Stamp:
        """The stamp of ``t`` seconds (rounded to the nearest nanosecond)."""
        if not math.isfinite(t):
            raise ProtocolError(f"stamp must be finite, got {t}")
        sec = math.floor(t)
        nanosec = round((t - sec) * 1e9)
        if nanosec >= NANOS_PER_SECOND:
            sec, nanosec = sec + 1, nanosec - NANOS_PER_SECOND
        return cls(int(sec), int(nanosec))

    def to_seconds(self) -> float:
        """Seconds as a float (nanosecond resolution is lost beyond about 2**53 ns)."""
        return self.sec + self.nanosec * 1e-9

    def to_dict(self) -> dict[str, int]:
        """The wire map ``{"sec", "nanosec"}``."""
        return {"sec": int(self.sec), "nanosec": int(self.nanosec)}

    @classmethod
    def from_dict(cls, d: Any, name: str = "stamp") -> Stamp:
        """The stamp of wire map ``d`` (field ``name`` in error messages)."""
        if not isinstance(d, Mapping):
            raise ProtocolError(f"field '{name}' must be a map {{sec, nanosec}}")
        values = []
        for key in ("sec", "nanosec"):
            if key not in d:
                raise ProtocolError(f"field '{name}.{key}' is missing")
            if not is_int(d[key]):
                raise ProtocolError(f"field '{name}.{key}' must be an integer, got "
                                    f"{type(d[key]).__name__}")
            values.append(d[key])
        sec, nanosec = values
        if not 0 <= nanosec < NANOS_PER_SECOND:
            raise ProtocolError(f"field '{name}.nanosec' must be in [0, 1e9), got {nanosec}")
        return cls(sec, nanosec)


def stamp_from_seconds(t: float) -> dict[str, int]:
    """``{"sec", "nanosec"}`` of a time in seconds."""
    return Stamp.from_seconds(t).to_dict()


def seconds_from_stamp(d: Mapping[str, Any]) -> float:
    """Seconds of a ``{"sec", "nanosec"}`` map (raises :class:`ProtocolError` if malformed)."""
    return Stamp.from_dict(d).to_seconds()

"""A bounded msgpack reader for the payload of a map file.

``msgpack.unpackb`` turns a whole buffer into Python objects: a forged payload of
empty containers (one byte each) would become ~60 bytes of Python object per byte
of file. :class:`Cursor` instead walks the payload's structure: it reads container
headers, strings and integers one at a time, returns ``bin`` values as zero-copy
views of the buffer and skips whole values without building them, so loading
allocates Python objects only for the small sections (``scalars``, ``extra``),
each within a byte limit the caller sets.

Every malformed input raises ValueError.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

_UNPACK_ERRORS = (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError,
                  msgpack.StackError)
# Type byte -> (size of the length field, fixed payload size) for the sized types;
# fix* types are decoded from the type byte itself.
_LENGTH_BYTES = {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4,  # bin, str
                 0xC7: 1, 0xC8: 2, 0xC9: 4}  # ext (+1 type byte)
_FIXED = {0xC0: 0, 0xC2: 0, 0xC3: 0, 0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8,
          0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8, 0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17}
_INTS = {0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q", 0xD0: ">b", 0xD1: ">h", 0xD2: ">i",
         0xD3: ">q"}


class Cursor:
    """Reads msgpack values from ``buf`` starting at ``pos`` (bytes offset)."""

    def __init__(self, buf: bytes | memoryview, pos: int = 0) -> None:
        self.buf = memoryview(buf).cast("B")
        self.pos = pos

    def _take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise ValueError(f"truncated msgpack data at byte {self.pos}")
        view = self.buf[self.pos: self.pos + n]
        self.pos += n
        return view

    def _uint(self, n: int) -> int:
        return int.from_bytes(self._take(n), "big")

    def _header(self, fix_lo: int, fix_hi: int, sized: dict[int, int], what: str) -> int:
        t = self._uint(1)
        if fix_lo <= t <= fix_hi:
            return t - fix_lo
        if t in sized:
            return self._uint(sized[t])
        raise ValueError(f"expected a msgpack {what} at byte {self.pos - 1}")

    def map_header(self, limit: int) -> int:
        """Number of entries of a map (at most ``limit``)."""
        n = self._header(0x80, 0x8F, {0xDE: 2, 0xDF: 4}, "map")
        if n > limit:
            raise ValueError(f"a map of {n} entries (at most {limit} expected)")
        return n

    def array_header(self, limit: int) -> int:
        """Number of items of an array (at most ``limit``)."""
        n = self._header(0x90, 0x9F, {0xDC: 2, 0xDD: 4}, "array")
        if n > limit:
            raise ValueError(f"an array of {n} items (at most {limit} expected)")
        return n

    def string(self, limit: int) -> str:
        """A str of at most ``limit`` bytes."""
        n = self._header(0xA0, 0xBF, {0xD9: 1, 0xDA: 2, 0xDB: 4}, "string")
        if n > limit:
            raise ValueError(f"a string of {n} bytes (at most {limit} expected)")
        return str(self._take(n), "utf-8")

    def binary(self) -> memoryview:
        """A bin value as a view of the buffer (no copy)."""
        t = self._uint(1)
        if t not in (0xC4, 0xC5, 0xC6):
            raise ValueError(f"expected a msgpack bin at byte {self.pos - 1}")
        return self._take(self._uint(_LENGTH_BYTES[t]))

    def integer(self) -> int:
        t = self.buf[self.pos] if self.pos < len(self.buf) else -1
        if t <= 0x7F or t >= 0xE0:
            self.pos += 1
            return t if t <= 0x7F else t - 0x100
        if t not in _INTS:
            raise ValueError(f"expected a msgpack integer at byte {self.pos}")
        self.pos += 1
        fmt = _INTS[t]
        return int(struct.unpack(fmt, self._take(struct.calcsize(fmt)))[0])

    def skip(self, max_bytes: int) -> None:
        """Step over one value of any type (containers included) without building it;
        ValueError when it spans more than ``max_bytes`` bytes."""
        end = self.pos + max_bytes
        pending = 1
        while pending:
            if self.pos >= end:
                raise ValueError(f"a msgpack value longer than {max_bytes} bytes")
            pending -= 1
            t = self._uint(1)
            if t <= 0x7F or t >= 0xE0:
                continue
            if t <= 0x8F:
                pending += 2 * (t - 0x80)
            elif t <= 0x9F:
                pending += t - 0x90
            elif t <= 0xBF:
                self._take(t - 0xA0)
            elif t in _FIXED:
                self._take(_FIXED[t])
            elif t in _LENGTH_BYTES:
                self._take(self._uint(_LENGTH_BYTES[t]) + (1 if t in (0xC7, 0xC8, 0xC9) else 0))
            elif t in (0xDC, 0xDD):
                pending += self._uint(2 if t == 0xDC else 4)
            elif t in (0xDE, 0xDF):
                pending += 2 * self._uint(2 if t == 0xDE else 4)
            else:
                raise ValueError(f"invalid msgpack type byte 0x{t:02x} at byte {self.pos - 1}")

    def value(self, max_bytes: int) -> Any:
        """The next value as Python objects; ValueError when it spans more than
        ``max_bytes`` bytes (bounding the objects it can create)."""
        start = self.pos
        self.skip(max_bytes)
        if self.pos - start > max_bytes:
            raise ValueError(f"a msgpack value longer than {max_bytes} bytes")
        try:
            return msgpack.unpackb(self.buf[start: self.pos], raw=False, strict_map_key=False)
        except _UNPACK_ERRORS as exc:
            raise ValueError(f"malformed msgpack value ({exc})") from exc

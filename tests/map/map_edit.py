"""Edit map files at the msgpack level and re-seal them (lengths, SHA-256, CRC-32), so
that a damaged or forged field gets past the checksums to the validation behind them.
Used by the corruption tests, the fuzzer and ``benchmarks/fuzz_maps.py``."""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np
from numpy.typing import NDArray

_PREFIX = struct.Struct("<8sIII")


@dataclass
class MapParts:
    """A map file taken apart: prefix magic and version, header and payload (msgpack
    objects; arrays stay ``{"dtype", "shape", "data"}`` maps)."""

    magic: bytes
    version: int
    header: Any
    body: Any

    def array(self, name: str) -> NDArray[Any]:
        """A writable copy of payload array ``name``."""
        meta = self.body["arrays"][name]
        return np.frombuffer(meta["data"], meta["dtype"]).reshape(meta["shape"]).copy()

    def set_array(self, name: str, value: NDArray[Any]) -> None:
        value = np.ascontiguousarray(value)
        self.body["arrays"][name] = {"dtype": value.dtype.str, "shape": list(value.shape),
                                     "data": value.tobytes()}


def split(data: bytes) -> MapParts:
    magic, version, header_len, _ = _PREFIX.unpack_from(data)
    header = msgpack.unpackb(data[20: 20 + header_len], raw=False)
    body = msgpack.unpackb(data[20 + header_len:], raw=False, strict_map_key=False)
    return MapParts(magic, version, header, body)


def seal(parts: MapParts, payload: bytes | None = None, fix_length: bool = True) -> bytes:
    """The file of ``parts`` (or of the raw ``payload`` bytes) with a matching payload
    length (unless ``fix_length`` is False), SHA-256 and header CRC-32."""
    if payload is None:
        payload = msgpack.packb(parts.body, use_bin_type=True)
    header = parts.header
    if isinstance(header, dict) and isinstance(header.get("payload"), dict):
        if fix_length:
            header["payload"]["length"] = len(payload)
        header["payload"]["sha256"] = hashlib.sha256(payload).hexdigest()
    header_bytes = msgpack.packb(header, use_bin_type=True)
    return (_PREFIX.pack(parts.magic, parts.version, len(header_bytes), zlib.crc32(header_bytes))
            + header_bytes + payload)


def edit(data: bytes, fn: Callable[[MapParts], None], fix_length: bool = True) -> bytes:
    """``data`` with ``fn`` applied to its parts, re-sealed (``fix_length`` False keeps
    whatever ``fn`` left in the header's payload length)."""
    parts = split(data)
    fn(parts)
    return seal(parts, fix_length=fix_length)


def reseal_payload(data: bytes, payload: bytes) -> bytes:
    """``data`` with its payload bytes replaced by ``payload`` (damaged at the byte
    level), the header's length and checksum made to match."""
    return seal(split_header_only(data), payload)


def split_header_only(data: bytes) -> MapParts:
    magic, version, header_len, _ = _PREFIX.unpack_from(data)
    return MapParts(magic, version, msgpack.unpackb(data[20: 20 + header_len], raw=False), None)


def payload_of(data: bytes) -> bytes:
    return data[20 + _PREFIX.unpack_from(data)[2]:]


# --- mutations (the fuzzer's) ----------------------------------------------------------
INTERESTING: tuple[Any, ...] = (
    0, -1, 1, 2, 7, 255, 2**31, -2**31, 2**53, 2**63 - 1, -2**63, 10**9, 1e308, -1e308,
    float("nan"), float("inf"), float("-inf"), 0.5, 1e-300, "", "x", "rgbd", None, True,
    False, [], {}, [1, 2], {"a": 1}, b"\0" * 8)
MUTATIONS = ("bitflip", "run", "truncate", "insert", "delete", "header", "scalar", "element",
             "dtype", "shape", "data", "extra", "section")


def _regions(data: bytes) -> tuple[bytes, bytes, bytes]:
    header_len = _PREFIX.unpack_from(data)[2]
    return data[:20], data[20: 20 + header_len], data[20 + header_len:]


def _reframe(data: bytes, prefix: bytes, header: bytes, payload: bytes) -> bytes:
    """``prefix`` with the header's length and CRC-32 fixed, then the header and payload."""
    magic, version, _, _ = _PREFIX.unpack_from(prefix)
    return _PREFIX.pack(magic, version, len(header), zlib.crc32(header)) + header + payload


def _byte_mutation(data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    """Flip bits, overwrite a run, cut, insert or delete bytes somewhere; a changed
    header gets its CRC-32 fixed and a changed payload is re-sealed (mostly), so the
    mutation reaches the parsers behind the checksums."""
    prefix, header, payload = _regions(data)
    region = rng.choice(["prefix", "header", "payload", "payload", "payload"])
    buf = bytearray({"prefix": prefix, "header": header, "payload": payload}[str(region)])
    if not buf:
        return data
    pos = int(rng.integers(0, len(buf)))
    if kind == "bitflip":
        for _ in range(int(rng.integers(1, 9))):
            i = int(rng.integers(0, len(buf)))
            buf[i] ^= 1 << int(rng.integers(0, 8))
    elif kind == "run":
        n = int(rng.integers(1, 65))
        fill = rng.choice([0x00, 0xFF, -1])
        run = rng.integers(0, 256, n).astype(np.uint8).tobytes() if fill < 0 else bytes(
            [int(fill)]) * n
        buf[pos: pos + n] = run[: len(buf) - pos]
    elif kind == "truncate":
        del buf[pos:]
    elif kind == "insert":
        buf[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 33))).astype(np.uint8).tobytes()
    else:
        del buf[pos: pos + int(rng.integers(1, 33))]
    out = bytes(buf)
    if region == "prefix":
        return out + header + payload
    if region == "header":
        return _reframe(data, prefix, out, payload) if rng.random() < 0.9 else (
            prefix + out + payload)
    if rng.random() < 0.9:
        try:
            return seal(split_header_only(data), out, fix_length=rng.random() < 0.9)
        except (ValueError, TypeError, KeyError):
            pass
    return prefix + header + out


def _leaves(d: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(d, dict) and d:
        return [p for k, v in d.items() for p in _leaves(v, (*path, k))]
    return [path] if path else []


def _pick(rng: np.random.Generator, items: list[Any]) -> Any:
    return items[int(rng.integers(0, len(items)))]


def _set_path(d: Any, path: tuple[Any, ...], value: Any) -> None:
    for k in path[:-1]:
        d = d[k]
    d[path[-1]] = value


def _element(parts: MapParts, name: str, rng: np.random.Generator) -> None:
    a = parts.array(name)
    if a.size == 0:
        return
    flat = a.reshape(-1)
    for _ in range(int(rng.integers(1, 4))):
        v = _pick(rng, [x for x in INTERESTING if isinstance(x, int | float)])
        i = int(rng.integers(0, flat.size))
        with np.errstate(all="ignore"):
            if flat.dtype.kind == "f":
                flat[i] = v
            elif flat.dtype.kind == "b":
                flat.view(np.uint8)[i] = int(rng.integers(0, 256))
            else:
                flat[i] = np.array(v, np.float64).astype(flat.dtype) if isinstance(
                    v, float) else np.array(v).astype(flat.dtype)
    parts.set_array(name, a)


def _field_mutation(parts: MapParts, kind: str, rng: np.random.Generator) -> None:
    """One msgpack-level edit of the header, the scalars, an array or a section."""
    arrays = parts.body["arrays"]
    name = _pick(rng, sorted(arrays))
    meta = arrays[name]
    value = _pick(rng, list(INTERESTING))
    if kind == "header":
        _set_path(parts.header, _pick(rng, _leaves(parts.header)), value)
    elif kind == "scalar":
        parts.body["scalars"][_pick(rng, sorted(parts.body["scalars"]))] = value
    elif kind == "element":
        _element(parts, name, rng)
    elif kind == "dtype":
        meta["dtype"] = _pick(rng, ["<f8", "<i8", "<i4", "|u1", "|b1", "<f4", ">f8", "|O",
                                    "<U4", "V8", "<c16", "x"])
    elif kind == "shape":
        shape = list(meta["shape"])
        edit_kind = int(rng.integers(0, 4))
        if edit_kind == 0 and shape:
            shape[int(rng.integers(0, len(shape)))] += int(rng.choice([-1, 1, 1000, 2**40]))
        elif edit_kind == 1:
            shape.append(int(rng.choice([0, 1, 2])))
        elif edit_kind == 2:
            shape = shape[:-1]
        else:
            shape = [int(np.prod(shape))] if shape else [1]
        meta["shape"] = shape
    elif kind == "data":
        raw = meta["data"]
        meta["data"] = raw[: int(rng.integers(0, len(raw) + 1))] if rng.random() < 0.5 else (
            raw + bytes(int(rng.integers(1, 64))))
    elif kind == "extra":
        parts.body["extra"] = value
    else:  # a whole section or array replaced or removed
        target = _pick(rng, ["scalars", "extra", "arrays", name])
        if target in parts.body:
            parts.body[target] = value if rng.random() < 0.5 else parts.body.pop(target)
            if rng.random() < 0.5:
                parts.body.pop(target, None)
        else:
            arrays[target] = value if rng.random() < 0.5 else arrays.pop(target)
            if rng.random() < 0.5:
                arrays.pop(target, None)


def mutate(data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    """A mutant of the map file ``data`` of one of the :data:`MUTATIONS`."""
    if kind in ("bitflip", "run", "truncate", "insert", "delete"):
        return _byte_mutation(data, kind, rng)
    parts = split(data)
    _field_mutation(parts, kind, rng)
    return seal(parts, fix_length=rng.random() < 0.95)

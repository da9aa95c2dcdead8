"""The payload of a map file: msgpack sections ``scalars``, ``extra`` and ``arrays``.

:func:`payload_chunks` frames arrays for writing without copying their bytes;
:func:`unpack_payload` reads a payload back through the bounded
:class:`~slam.map.msgpack_reader.Cursor` (arrays become read-only views of the
payload; ``scalars`` and ``extra`` are size-limited); :func:`migrate` brings an
older format version's arrays up to the current one.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import msgpack
import numpy as np
from numpy.typing import NDArray

from slam.errors import MapFileError
from slam.map.image_codec import v1_image_arrays
from slam.map.map_arrays import Arrays
from slam.map.msgpack_reader import Cursor

MAX_SCALARS_BYTES = 1 << 16  # the payload's ``scalars`` section
MAX_EXTRA_BYTES = 1 << 20  # the payload's ``extra`` section (the caller's dict)
MAX_ARRAYS = 1024  # named arrays in the payload
MAX_DIMS = 8  # dimensions of one array
_MAX_NAME = 256  # bytes of an array name or dtype string

Chunk = bytes | memoryview


def payload_chunks(arrays: Arrays, scalars: dict[str, Any], extra_bytes: bytes
                   ) -> list[Chunk]:
    """The payload as msgpack pieces and zero-copy views of the array bytes."""
    p = msgpack.Packer(use_bin_type=True)
    chunks: list[Chunk] = [p.pack_map_header(3), p.pack("scalars"), p.pack(scalars),
                           p.pack("extra"), extra_bytes, p.pack("arrays"),
                           p.pack_map_header(len(arrays))]
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        if a.nbytes >= 1 << 32:
            raise MapFileError(f"array {name} of {a.nbytes} bytes is too large for a map file")
        chunks += [p.pack(name), p.pack_map_header(3), p.pack("dtype"), p.pack(a.dtype.str),
                   p.pack("shape"), p.pack(list(a.shape)), p.pack("data"),
                   _bin_header(a.nbytes), a.reshape(-1).view(np.uint8).data]
    return chunks


def _bin_header(n: int) -> bytes:
    """msgpack ``bin 32`` type byte and big-endian length of an ``n``-byte string."""
    return b"\xc6" + struct.pack(">I", n)


def unpack_payload(payload: memoryview) -> dict[str, Any]:
    """Scalars, extra and arrays (read-only views of ``payload``) of a payload, read
    with :class:`~slam.map.msgpack_reader.Cursor` (ValueError when malformed)."""
    cur = Cursor(payload)
    body: dict[str, Any] = {}
    for _ in range(cur.map_header(3)):
        key = cur.string(16)
        if key in body:
            raise ValueError(f"section {key!r} appears twice")
        if key == "scalars":
            body[key] = cur.value(MAX_SCALARS_BYTES)
        elif key == "extra":
            body[key] = cur.value(MAX_EXTRA_BYTES)
        elif key == "arrays":
            body[key] = _read_arrays(cur)
        else:
            raise ValueError(f"unknown section {key[:32]!r}")
    if cur.pos != len(payload):
        raise ValueError(f"{len(payload) - cur.pos} bytes after the payload's map")
    missing = {"scalars", "extra", "arrays"} - body.keys()
    if missing:
        raise ValueError(f"missing sections {sorted(missing)}")
    for key in ("scalars", "extra"):
        if not isinstance(body[key], dict):
            raise ValueError(f"section {key!r} is not a map")
    return body


def _read_arrays(cur: Cursor) -> Arrays:
    arrays: Arrays = {}
    for _ in range(cur.map_header(MAX_ARRAYS)):
        name = cur.string(_MAX_NAME)
        meta: dict[str, Any] = {}
        for _ in range(cur.map_header(3)):
            key = cur.string(16)
            if key == "dtype":
                meta[key] = cur.string(_MAX_NAME)
            elif key == "shape":
                meta[key] = [cur.integer() for _ in range(cur.array_header(MAX_DIMS))]
            elif key == "data":
                meta[key] = cur.binary()
            else:
                raise ValueError(f"array {name!r} has an unknown field {key!r}")
        if name in arrays or meta.keys() != {"dtype", "shape", "data"}:
            raise ValueError(f"array {name!r} is duplicated or incomplete")
        arrays[name] = _array_from_bytes(name, meta["dtype"], meta["shape"], meta["data"])
    return arrays


def _array_from_bytes(name: str, dtype_str: str, shape_list: list[int], raw: memoryview
                      ) -> NDArray[Any]:
    dtype = np.dtype(dtype_str)
    if dtype.kind not in "biuf" or dtype.byteorder == ">" or dtype.subdtype is not None:
        raise ValueError(f"array {name} has unsupported dtype {dtype_str}")
    shape = tuple(shape_list)
    if any(s < 0 for s in shape) or math.prod(shape) * dtype.itemsize != len(raw):
        raise ValueError(f"array {name}: {len(raw)} bytes do not fit shape {shape} {dtype}")
    return np.frombuffer(raw, dtype).reshape(shape)


def migrate(version: int, arrays: Arrays, scalars: dict[str, Any], current: int
            ) -> tuple[Arrays, dict[str, Any]]:
    """Bring the arrays and scalars of an older supported format version up to
    ``current`` (ValueError or KeyError when they do not fit the old version).

    Version 1 stored colour images raw and no grey, right or depth image: its colour
    arrays become version 2 raw images (:func:`v1_image_arrays`). A later version adds
    a step here.
    """
    if version == 1:
        images = v1_image_arrays(arrays)
        arrays = {k: v for k, v in arrays.items() if k not in (
            "kf.color_ndim", "kf.color_shape", "kf.color_offsets", "color.data")}
        arrays |= images
        version = 2
    if version != current:  # pragma: no cover - every older version is handled
        raise ValueError(f"no migration from format version {version}")
    return arrays, scalars

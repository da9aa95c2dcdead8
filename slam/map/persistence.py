"""Save and load the whole SLAM map: a versioned, checksummed file, written atomically.

Layout (``docs/map_format.md`` has the byte layout and every field)::

    0        8 bytes   magic b"SLAMMAP\\0"
    8        u32 LE    format version
    12       u32 LE    header length H
    16       u32 LE    CRC-32 of the header bytes
    20       H bytes   msgpack header: versions, sensor, calibration, counts,
                       payload length and SHA-256
    20 + H   L bytes   msgpack payload: scalars, extra, and named bulk arrays
                       (dtype, shape, raw little-endian bytes)

No pickle: arrays are raw bytes, everything else plain msgpack. Per-keyframe
arrays are concatenated and indexed by ``*_offsets`` arrays (CSR style). A save
writes a temporary file beside the target, fsyncs it and renames it over the
target (:mod:`slam.map.file_io`).

A map file is untrusted input: every field is validated before anything is
decoded or allocated (:mod:`slam.map.map_header`, :mod:`slam.map.map_checks`,
:mod:`slam.map.msgpack_reader`), and every failure, whatever the file holds, is a
:class:`~slam.errors.MapFileError` (exit code 8). This module is the public API
and the file framing; :mod:`slam.map.map_arrays` converts maps and arrays.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from slam.camera.pinhole import Calibration
from slam.errors import MapFileError
from slam.io import files as file_io
from slam.map.image_codec import (
    Images,
    decode_image_arrays,
    encode_image_arrays,
    snapshot_images,
)
from slam.map.map import Map
from slam.map.map_arrays import Arrays, decode_map, encode_map
from slam.map.map_checks import check_references, check_scalars, check_structure, check_values
from slam.map.map_header import (
    MapFileInfo,
    check_same_camera,
    info_from_header,
    make_header,
)
from slam.map.payload import MAX_EXTRA_BYTES, migrate, payload_chunks, unpack_payload

__all__ = ["FORMAT_VERSION", "MAGIC", "EncodedMap", "LoadedMap", "MapFileInfo",
           "MapSnapshot", "encode_snapshot", "load_map", "load_map_bytes", "read_map_info",
           "save_map", "snapshot_map"]

log = logging.getLogger(__name__)

MAGIC = b"SLAMMAP\0"
FORMAT_VERSION = 2
MIN_FORMAT_VERSION = 1
_PREFIX = struct.Struct("<8sIII")  # magic, format version, header length, header CRC-32
MAX_HEADER_BYTES = 1 << 20  # the msgpack header
# Containers of the header are small (a few dozen fields, up to 8 distortion
# coefficients): these msgpack limits keep a forged header from becoming many objects.
_HEADER_LIMITS = {"max_str_len": 4096, "max_bin_len": 0, "max_array_len": 16,
                  "max_map_len": 64, "max_ext_len": 0}

Chunk = bytes | memoryview
_LOAD_ERRORS = (ValueError, TypeError, KeyError, IndexError, OverflowError)


@dataclass
class LoadedMap:
    """A map read back from a file, with the calibration and sensor it was made with."""

    map: Map
    calibration: Calibration
    sensor: str
    info: MapFileInfo
    extra: dict[Any, Any] = field(default_factory=dict)


@dataclass
class MapSnapshot:
    """A consistent copy of a map taken under its lock (:func:`snapshot_map`): bulk
    arrays and scalars, references to the keyframe images, the packed ``extra``."""

    arrays: Arrays
    scalars: dict[str, Any]
    images: Images
    extra_bytes: bytes


@dataclass
class EncodedMap:
    """A map file in memory: ``chunks`` (bytes and views) to write in order, its
    ``header`` and what :func:`read_map_info` will say about it."""

    chunks: list[Chunk]
    header: dict[str, Any]
    info: MapFileInfo

    @property
    def size(self) -> int:
        """Bytes of the whole file."""
        return sum(len(c) for c in self.chunks)


# --- saving -------------------------------------------------------------------
def snapshot_map(slam_map: Map, extra: dict[Any, Any] | None = None) -> MapSnapshot:
    """Copy ``slam_map`` into arrays under its lock (about 0.1 s for 300 keyframes and
    30,000 points; the images are only referenced, they are never changed in place).
    ``extra`` (a msgpack-able dict) is packed here; TypeError when it is not."""
    try:
        extra_bytes = msgpack.packb({} if extra is None else extra, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"extra must be a msgpack-able dict: {exc}") from exc
    if len(extra_bytes) > MAX_EXTRA_BYTES:
        raise MapFileError(f"cannot save a map whose extra is {len(extra_bytes)} bytes "
                           f"(at most {MAX_EXTRA_BYTES})")
    with slam_map.lock:
        arrays, scalars = encode_map(slam_map)
        images = snapshot_images([kf.frame for kf in slam_map.keyframes.values()])
    return MapSnapshot(arrays, scalars, images, extra_bytes)


def encode_snapshot(snapshot: MapSnapshot, calibration: Calibration, sensor: str,
                    color_quality: int | None = 95, name: str = "map") -> EncodedMap:
    """Compress the images and frame the file (no lock needed). Raises
    :class:`MapFileError` when the map would not load back (a check of
    :mod:`slam.map.map_checks` fails; ``name`` labels the message)."""
    arrays = snapshot.arrays | encode_image_arrays(snapshot.images, color_quality)
    try:
        _validate(arrays, snapshot.scalars, calibration)
    except _LOAD_ERRORS as exc:
        raise MapFileError(f"cannot save {name}: the map is invalid ({exc})") from exc
    chunks = payload_chunks(arrays, snapshot.scalars, snapshot.extra_bytes)
    counts = {"keyframes": len(arrays["kf.id"]),
              "bad_keyframes": int(np.count_nonzero(arrays["kf.bad"])),
              "points": len(arrays["pt.id"]), "observations": len(arrays["obs.kf_id"]),
              "keypoints": len(arrays["kp.point_id"])}
    header = make_header(counts, chunks, calibration, sensor, FORMAT_VERSION)
    header_bytes = msgpack.packb(header, use_bin_type=True)
    prefix = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header_bytes), zlib.crc32(header_bytes))
    try:
        info = info_from_header(name, Path(name), header, FORMAT_VERSION)
    except MapFileError as exc:
        raise MapFileError(f"cannot save {name}: {exc.__cause__}") from exc
    return EncodedMap([prefix, header_bytes, *chunks], header, info)


def save_map(
    path: str | Path, slam_map: Map, calibration: Calibration, sensor: str,
    *, extra: dict[Any, Any] | None = None, color_quality: int | None = 95,
) -> MapFileInfo:
    """Write ``slam_map`` (every keyframe, culled ones too, every point, the graphs and
    id counters) with its calibration and sensor to ``path``, atomically.

    The map lock is held only while the map is copied into arrays
    (:func:`snapshot_map`); encoding and writing happen after it is released.
    ``extra`` (a msgpack-able dict) is stored verbatim (tuples come back as lists).
    Keyframe images are compressed: colour as JPEG of ``color_quality`` (None:
    lossless PNG), grey as PNG, depth as 16-bit PNG (0.2 mm steps; see
    docs/map_format.md). Raises :class:`MapFileError` when the file cannot be written
    or the map is invalid; an existing file at ``path`` is then left untouched.
    """
    path = Path(path)
    t0 = time.perf_counter()
    snapshot = snapshot_map(slam_map, extra)
    t_snap = time.perf_counter() - t0
    encoded = encode_snapshot(snapshot, calibration, sensor, color_quality, str(path))
    if path.is_dir():
        raise MapFileError(f"cannot write map file {path}: it is a directory")
    if not path.parent.is_dir():
        raise MapFileError(f"cannot write map file {path}: directory {path.parent} does not "
                           "exist")
    try:
        file_io.write_file(path, encoded.chunks)
    except OSError as exc:
        raise MapFileError(f"cannot write map file {path}: {exc.strerror or exc}") from exc
    log.info("saved map %s: %d keyframes, %d points, %.1f MB in %.3f s (snapshot %.3f s)",
             path, encoded.info.n_keyframes, encoded.info.n_points, encoded.size / 1e6,
             time.perf_counter() - t0, t_snap)
    return _with_path(encoded.info, path)


def _with_path(info: MapFileInfo, path: Path) -> MapFileInfo:
    return MapFileInfo(**{**vars(info), "path": path})


# --- loading ------------------------------------------------------------------
def read_map_info(path: str | Path) -> MapFileInfo:
    """The header of a map file (cheap: the payload is neither read nor verified,
    only its length is checked against the file size)."""
    path = Path(path)
    where = str(path)
    fd = _open(path)
    try:
        size = os.fstat(fd).st_size
        head = os.pread(fd, _PREFIX.size, 0)
        header_len = _check_prefix(where, head, size)
        header_bytes = os.pread(fd, header_len, _PREFIX.size)
    except OSError as exc:
        raise MapFileError(f"cannot read map file {path}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    info = _parse_header(where, path, head, header_bytes)
    _check_size(where, header_len, info, size)
    return info


def load_map(
    path: str | Path, *, calibration: Calibration | None = None, sensor: str | None = None,
) -> LoadedMap:
    """Read a map file back into a :class:`Map` equal to the one saved.

    With ``calibration`` and/or ``sensor`` given, the file must have been made with
    the same camera (intrinsics within 1e-6 relative, same image size, same
    distortion) and sensor. ``LoadedMap.calibration`` is the stored calibration.
    Only regular files are read. Every failure raises :class:`MapFileError` naming
    the file.
    """
    path = Path(path)
    fd = _open(path)
    try:
        data = file_io.read_regular(fd)
    except OSError as exc:
        raise MapFileError(f"cannot read map file {path}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    return _load(memoryview(data), str(path), path, calibration, sensor)


def load_map_bytes(
    data: bytes | bytearray | memoryview, name: str, *, calibration: Calibration | None = None,
    sensor: str | None = None,
) -> LoadedMap:
    """:func:`load_map` of a file's content already in memory; ``name`` labels the
    messages and ``info.path`` (for example the file's name in a map directory)."""
    return _load(memoryview(data), name, Path(name), calibration, sensor)


def _open(path: Path) -> int:
    """A read-only, non-blocking descriptor of a regular file (MapFileError otherwise:
    missing, a directory, a FIFO, a device, unreadable)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as exc:
        raise MapFileError(f"map file {path} does not exist") from exc
    except OSError as exc:
        raise MapFileError(f"cannot read map file {path}: {exc.strerror or exc}") from exc
    try:
        mode = os.fstat(fd).st_mode
    except OSError as exc:
        os.close(fd)
        raise MapFileError(f"cannot read map file {path}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(mode):
        os.close(fd)
        what = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise MapFileError(f"{path} is {what}, not a map file")
    return fd


def _load(data: memoryview, where: str, path: Path, calibration: Calibration | None,
          sensor: str | None) -> LoadedMap:
    """Every check, then the map; no exception but MapFileError leaves (a trust
    boundary: an unexpected error is logged with its traceback and reported)."""
    try:
        return _load_checked(data, where, path, calibration, sensor)
    except MapFileError:
        raise
    except Exception as exc:
        log.error("map file %s: unexpected %s while loading", where, type(exc).__name__,
                  exc_info=True)
        raise MapFileError(f"map file {where} cannot be loaded (internal error "
                           f"{type(exc).__name__}: {' '.join(str(exc).split())})") from exc


def _load_checked(data: memoryview, where: str, path: Path, calibration: Calibration | None,
                  sensor: str | None) -> LoadedMap:
    t0 = time.perf_counter()
    header_len = _check_prefix(where, data[: _PREFIX.size], len(data))
    start = _PREFIX.size + header_len
    info = _parse_header(where, path, data[: _PREFIX.size], data[_PREFIX.size: start])
    _check_size(where, header_len, info, len(data))
    if sensor is not None and sensor != info.sensor:
        raise MapFileError(f"map file {where} was made with a {info.sensor} sensor, "
                           f"not {sensor}")
    if calibration is not None:
        check_same_camera(where, info.calibration, calibration)
    payload = data[start:]
    if hashlib.sha256(payload).hexdigest() != info.payload_sha256:
        raise MapFileError(f"map file {where} is corrupt: the payload checksum (SHA-256) "
                           "does not match the header (damaged or modified file)")
    try:
        body = unpack_payload(payload)
    except _LOAD_ERRORS as exc:
        raise MapFileError(f"map file {where} is corrupt: malformed payload ({exc})") from exc
    try:
        arrays, scalars = migrate(info.format_version, body["arrays"], body["scalars"],
                                 FORMAT_VERSION)
        _validate(arrays, scalars, info.calibration)
        _check_counts(info, arrays)
        slam_map = decode_map(arrays, scalars, decode_image_arrays(arrays))
    except _LOAD_ERRORS as exc:
        raise MapFileError(f"map file {where} is inconsistent: {exc}") from exc
    log.info("loaded map %s: %d keyframes, %d points in %.3f s", where, info.n_keyframes,
             info.n_points, time.perf_counter() - t0)
    return LoadedMap(slam_map, info.calibration, info.sensor, info, body["extra"])


def _validate(arrays: Arrays, scalars: dict[str, Any], calibration: Calibration) -> None:
    """Every check of :mod:`slam.map.map_checks`, in order (ValueError)."""
    check_structure(arrays, scalars)
    check_scalars(scalars)
    check_values(arrays, scalars, calibration)
    check_references(arrays, scalars)


def _check_counts(info: MapFileInfo, a: Arrays) -> None:
    """The header's counts agree with the arrays (ValueError)."""
    found = {"keyframes": len(a["kf.id"]), "bad_keyframes": int(np.count_nonzero(a["kf.bad"])),
             "points": len(a["pt.id"]), "observations": len(a["obs.kf_id"]),
             "keypoints": len(a["kp.point_id"])}
    stated = {"keyframes": info.n_keyframes, "bad_keyframes": info.n_bad_keyframes,
              "points": info.n_points, "observations": info.n_observations,
              "keypoints": info.n_keypoints}
    for key, n in found.items():
        if stated[key] != n:
            raise ValueError(f"the header counts {stated[key]} {key}, the payload holds {n}")


# --- framing ------------------------------------------------------------------
def _check_prefix(where: str, head: Chunk, size: int) -> int:
    """Validate magic and version of the 20-byte prefix; return the header length."""
    head = bytes(head)
    if size == 0:
        raise MapFileError(f"{where} is empty, not a map file")
    if len(head) < _PREFIX.size:
        if MAGIC.startswith(head[: len(MAGIC)]):
            raise MapFileError(f"map file {where} is truncated ({size} bytes)")
        raise MapFileError(f"{where} is not a map file (no SLAMMAP magic)")
    magic, version, header_len, _ = _PREFIX.unpack(head)
    if magic != MAGIC:
        raise MapFileError(f"{where} is not a map file (no SLAMMAP magic)")
    if version > FORMAT_VERSION:
        raise MapFileError(f"map file {where} was written by a newer version {version} of "
                           f"the map format; this build reads up to version {FORMAT_VERSION} "
                           "(upgrade the slam package)")
    if version < MIN_FORMAT_VERSION:
        raise MapFileError(f"map file {where} has format version {version}, which this build "
                           f"no longer reads (versions {MIN_FORMAT_VERSION}..{FORMAT_VERSION})")
    if header_len > MAX_HEADER_BYTES:
        raise MapFileError(f"map file {where} is corrupt: header length {header_len}")
    if size < _PREFIX.size + header_len:
        raise MapFileError(f"map file {where} is truncated: {size} bytes, the header alone "
                           f"needs {_PREFIX.size + header_len}")
    return int(header_len)


def _parse_header(where: str, path: Path, head: Chunk, header_bytes: Chunk) -> MapFileInfo:
    _, version, _, crc = _PREFIX.unpack(bytes(head))
    if zlib.crc32(header_bytes) != crc:
        raise MapFileError(f"map file {where} is corrupt: header checksum (CRC-32) mismatch")
    try:
        header = msgpack.unpackb(header_bytes, raw=False, **_HEADER_LIMITS)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError,
            msgpack.StackError) as exc:
        raise MapFileError(f"map file {where} is corrupt: malformed header ({exc})") from exc
    return info_from_header(where, path, header, int(version))


def _check_size(where: str, header_len: int, info: MapFileInfo, size: int) -> None:
    expected = _PREFIX.size + header_len + info.payload_bytes
    if size < expected:
        raise MapFileError(f"map file {where} is truncated: {size} bytes of {expected} "
                           "(interrupted copy or write?)")
    if size > expected:
        raise MapFileError(f"map file {where} is corrupt: {size - expected} unexpected bytes "
                           "after the payload")

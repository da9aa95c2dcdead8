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
arrays are concatenated and indexed by ``*_offsets`` arrays (CSR style), so a
map of hundreds of keyframes and tens of thousands of points is a few dozen
bulk arrays. A save writes a temporary file beside the target, fsyncs it and
renames it over the target, so a crash never leaves a half-written file under
the target's name nor destroys the previous file.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import os
import secrets
import struct
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import msgpack
import numpy as np
from numpy.typing import NDArray

import slam
from slam.camera.pinhole import Calibration, PinholeCamera
from slam.errors import CalibrationError, MapFileError
from slam.map.frame import Frame
from slam.map.image_codec import (
    IMAGE_OFFSETS,
    check_image_arrays,
    decode_image_arrays,
    encode_image_arrays,
    image_spec,
    snapshot_images,
    v1_image_arrays,
)
from slam.map.keyframe import KeyFrame
from slam.map.map import Map
from slam.map.map_point import MapPoint
from slam.map.point_store import PointStore

log = logging.getLogger(__name__)

MAGIC = b"SLAMMAP\0"
FORMAT_VERSION = 2
MIN_FORMAT_VERSION = 1
PAYLOAD_ENCODING = "msgpack-arrays-le"
_PREFIX = struct.Struct("<8sIII")  # magic, format version, header length, header CRC-32
_MAX_HEADER = 1 << 20
_INTRINSIC_RTOL = 1e-6

Chunk = bytes | memoryview


@dataclass(frozen=True)
class MapFileInfo:
    """What the header of a map file says (readable without loading the map).

    ``n_keyframes`` counts every keyframe, culled ones too (``n_bad_keyframes``);
    ``n_points`` live map points; ``n_keypoints`` features over all keyframes.
    """

    path: Path
    format_version: int
    package_version: str
    created: datetime
    sensor: str
    calibration: Calibration
    n_keyframes: int
    n_bad_keyframes: int
    n_points: int
    n_observations: int
    n_keypoints: int
    payload_bytes: int
    payload_sha256: str

    @property
    def camera(self) -> PinholeCamera:
        return self.calibration.camera


@dataclass
class LoadedMap:
    """A map read back from a file, with the calibration and sensor it was made with."""

    map: Map
    calibration: Calibration
    sensor: str
    info: MapFileInfo
    extra: dict[Any, Any] = field(default_factory=dict)


# --- public API ---------------------------------------------------------------
def save_map(
    path: str | Path, slam_map: Map, calibration: Calibration, sensor: str,
    *, extra: dict[Any, Any] | None = None, color_quality: int | None = 95,
) -> MapFileInfo:
    """Write ``slam_map`` (every keyframe, culled ones too, every point, the graphs and
    id counters) with its calibration and sensor to ``path``, atomically.

    The map lock is held only while the map is copied into arrays; encoding and
    writing happen after it is released. ``extra`` (a msgpack-able dict) is stored
    verbatim (tuples come back as lists). Keyframe images are compressed: colour as
    JPEG of ``color_quality`` (None: lossless PNG), grey as PNG, depth as 16-bit PNG
    (0.2 mm steps; see docs/map_format.md). Raises :class:`MapFileError` when the file
    cannot be written; an existing file at ``path`` is then left untouched.
    """
    path = Path(path)
    extra = {} if extra is None else extra
    try:
        extra_bytes = msgpack.packb(extra, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"extra must be a msgpack-able dict: {exc}") from exc
    t0 = time.perf_counter()
    with slam_map.lock:
        arrays, scalars = _encode_map(slam_map)
        images = snapshot_images([kf.frame for kf in slam_map.keyframes.values()])
    t_snap = time.perf_counter() - t0
    arrays |= encode_image_arrays(images, color_quality)
    chunks = _payload_chunks(arrays, scalars, extra_bytes)
    header = _make_header(arrays, chunks, calibration, sensor)
    header_bytes = msgpack.packb(header, use_bin_type=True)
    prefix = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header_bytes), zlib.crc32(header_bytes))
    try:
        _atomic_write(path, [prefix, header_bytes, *chunks])
    except OSError as exc:
        raise MapFileError(f"cannot write map file {path}: {exc.strerror or exc}") from exc
    log.info("saved map %s: %d keyframes, %d points, %.1f MB in %.3f s (snapshot %.3f s)",
             path, len(arrays["kf.id"]), len(arrays["pt.id"]),
             header["payload"]["length"] / 1e6, time.perf_counter() - t0, t_snap)
    return _info_from_header(path, header)


def read_map_info(path: str | Path) -> MapFileInfo:
    """The header of a map file (cheap: the payload is neither read nor verified,
    only its length is checked against the file size)."""
    path = Path(path)
    with _open(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        head = _read(path, fh, _PREFIX.size)
        header_len = _check_prefix(path, head, size)
        header = _parse_header(path, head, _read(path, fh, header_len))
    _check_size(path, header_len, header, size)
    return _info_from_header(path, header)


def load_map(
    path: str | Path, *, calibration: Calibration | None = None, sensor: str | None = None,
) -> LoadedMap:
    """Read a map file back into a :class:`Map` equal to the one saved.

    With ``calibration`` and/or ``sensor`` given, the file must have been made with
    the same camera (intrinsics within 1e-6 relative, same image size, same
    distortion) and sensor. ``LoadedMap.calibration`` is the stored calibration.
    Every failure raises :class:`MapFileError` naming the file.
    """
    path = Path(path)
    t0 = time.perf_counter()
    with _open(path) as fh:
        data = memoryview(_read(path, fh, -1))
    header_len = _check_prefix(path, data[: _PREFIX.size], len(data))
    start = _PREFIX.size + header_len
    header = _parse_header(path, data[: _PREFIX.size], data[_PREFIX.size: start])
    _check_size(path, header_len, header, len(data))
    info = _info_from_header(path, header)
    if sensor is not None and sensor != info.sensor:
        raise MapFileError(f"map file {path} was made with a {info.sensor} sensor, "
                           f"not {sensor}")
    if calibration is not None:
        _check_same_camera(path, info.calibration, calibration)
    payload = data[start:]
    if hashlib.sha256(payload).hexdigest() != info.payload_sha256:
        raise MapFileError(f"map file {path} is corrupt: the payload checksum (SHA-256) "
                           "does not match the header (damaged or modified file)")
    body = _unpack_payload(path, payload)
    body = _migrate(path, info.format_version, body)
    try:
        slam_map = _decode_map(body["arrays"], body["scalars"])
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise MapFileError(f"map file {path} is inconsistent: {exc}") from exc
    log.info("loaded map %s: %d keyframes, %d points in %.3f s", path, info.n_keyframes,
             info.n_points, time.perf_counter() - t0)
    return LoadedMap(slam_map, info.calibration, info.sensor, info, body["extra"])


# --- payload ------------------------------------------------------------------
def _payload_chunks(
    arrays: dict[str, NDArray[Any]], scalars: dict[str, Any], extra_bytes: bytes
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


def _unpack_payload(path: Path, payload: memoryview) -> dict[str, Any]:
    """Scalars, extra and arrays (read-only views of the unpacked bytes) of a payload."""
    try:
        body = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        missing = {"scalars", "extra", "arrays"} - body.keys()
        if missing:
            raise ValueError(f"missing sections {sorted(missing)}")
        body["arrays"] = {name: _array_from_bytes(name, meta["dtype"], meta["shape"],
                                                  meta["data"])
                          for name, meta in body["arrays"].items()}
    except (ValueError, TypeError, KeyError, AttributeError, msgpack.ExtraData,
            msgpack.FormatError, msgpack.StackError) as exc:
        raise MapFileError(f"map file {path} is corrupt: malformed payload ({exc})") from exc
    return dict(body)


def _array_from_bytes(name: str, dtype_str: str, shape_list: list[int], raw: bytes
                      ) -> NDArray[Any]:
    dtype = np.dtype(dtype_str)
    if dtype.kind not in "biuf" or dtype.byteorder == ">":
        raise ValueError(f"array {name} has unsupported dtype {dtype_str}")
    shape = tuple(int(s) for s in shape_list)
    if any(s < 0 for s in shape) or int(np.prod(shape)) * dtype.itemsize != len(raw):
        raise ValueError(f"array {name}: {len(raw)} bytes do not fit shape {shape} {dtype}")
    return np.frombuffer(raw, dtype).reshape(shape)


def _migrate(path: Path, version: int, body: dict[str, Any]) -> dict[str, Any]:
    """Bring a payload of an older supported format version up to FORMAT_VERSION.

    Version 1 stored colour images raw and no grey, right or depth image: its colour
    arrays become version 2 raw images (:func:`v1_image_arrays`). A later version adds
    a step ``body = _vN_to_vN1(body)``.
    """
    if version == 1:
        arrays = dict(body["arrays"])
        try:
            images = v1_image_arrays(arrays)
        except (ValueError, KeyError) as exc:
            raise MapFileError(f"map file {path} is inconsistent: {exc}") from exc
        for name in ("kf.color_ndim", "kf.color_shape", "kf.color_offsets", "color.data"):
            del arrays[name]
        body = {**body, "arrays": arrays | images}
        version = 2
    if version != FORMAT_VERSION:  # pragma: no cover - every older version is handled
        raise MapFileError(f"map file {path}: no migration from format version {version}")
    return body


# --- header -------------------------------------------------------------------
def _make_header(arrays: dict[str, NDArray[Any]], chunks: list[Chunk],
                 calibration: Calibration, sensor: str) -> dict[str, Any]:
    digest = hashlib.sha256()
    for c in chunks:
        digest.update(c)
    return {
        "format_version": FORMAT_VERSION,
        "package_version": slam.__version__,
        "created": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "sensor": sensor,
        "calibration": _calibration_to_dict(calibration),
        "counts": {
            "keyframes": len(arrays["kf.id"]),
            "bad_keyframes": int(np.count_nonzero(arrays["kf.bad"])),
            "points": len(arrays["pt.id"]),
            "observations": len(arrays["obs.kf_id"]),
            "keypoints": len(arrays["kp.point_id"]),
        },
        "payload": {"encoding": PAYLOAD_ENCODING, "length": sum(len(c) for c in chunks),
                    "sha256": digest.hexdigest()},
    }


def _check_prefix(path: Path, head: Chunk, size: int) -> int:
    """Validate magic and version of the 20-byte prefix; return the header length."""
    head = bytes(head)
    if size == 0:
        raise MapFileError(f"{path} is empty, not a map file")
    if len(head) < _PREFIX.size:
        if MAGIC.startswith(head[: len(MAGIC)]):
            raise MapFileError(f"map file {path} is truncated ({size} bytes)")
        raise MapFileError(f"{path} is not a map file (no SLAMMAP magic)")
    magic, version, header_len, _ = _PREFIX.unpack(head)
    if magic != MAGIC:
        raise MapFileError(f"{path} is not a map file (no SLAMMAP magic)")
    if version > FORMAT_VERSION:
        raise MapFileError(f"map file {path} was written by a newer version {version} of the "
                           f"map format; this build reads up to version {FORMAT_VERSION} "
                           "(upgrade the slam package)")
    if version < MIN_FORMAT_VERSION:
        raise MapFileError(f"map file {path} has format version {version}, which this build "
                           f"no longer reads (versions {MIN_FORMAT_VERSION}..{FORMAT_VERSION})")
    if header_len > _MAX_HEADER:
        raise MapFileError(f"map file {path} is corrupt: header length {header_len}")
    if size < _PREFIX.size + header_len:
        raise MapFileError(f"map file {path} is truncated: {size} bytes, the header alone "
                           f"needs {_PREFIX.size + header_len}")
    return int(header_len)


def _parse_header(path: Path, head: Chunk, header_bytes: Chunk) -> dict[str, Any]:
    _, version, _, crc = _PREFIX.unpack(bytes(head))
    if zlib.crc32(header_bytes) != crc:
        raise MapFileError(f"map file {path} is corrupt: header checksum (CRC-32) mismatch")
    try:
        header = msgpack.unpackb(header_bytes, raw=False)
        ok = isinstance(header, dict) and header["format_version"] == version
        ok = ok and header["payload"]["encoding"] == PAYLOAD_ENCODING
    except (ValueError, TypeError, KeyError, msgpack.ExtraData) as exc:
        raise MapFileError(f"map file {path} is corrupt: malformed header ({exc})") from exc
    if not ok:
        raise MapFileError(f"map file {path} is corrupt: header disagrees with the prefix")
    return dict(header)


def _check_size(path: Path, header_len: int, header: dict[str, Any], size: int) -> None:
    expected = _PREFIX.size + header_len + int(header["payload"]["length"])
    if size < expected:
        raise MapFileError(f"map file {path} is truncated: {size} bytes of {expected} "
                           "(interrupted copy or write?)")
    if size > expected:
        raise MapFileError(f"map file {path} is corrupt: {size - expected} unexpected bytes "
                           "after the payload")


def _info_from_header(path: Path, header: dict[str, Any]) -> MapFileInfo:
    try:
        counts = header["counts"]
        return MapFileInfo(
            path=path, format_version=int(header["format_version"]),
            package_version=str(header["package_version"]),
            created=datetime.fromisoformat(header["created"]), sensor=str(header["sensor"]),
            calibration=_calibration_from_dict(header["calibration"]),
            n_keyframes=int(counts["keyframes"]), n_bad_keyframes=int(counts["bad_keyframes"]),
            n_points=int(counts["points"]), n_observations=int(counts["observations"]),
            n_keypoints=int(counts["keypoints"]),
            payload_bytes=int(header["payload"]["length"]),
            payload_sha256=str(header["payload"]["sha256"]),
        )
    except (KeyError, TypeError, ValueError, CalibrationError) as exc:
        raise MapFileError(f"map file {path} is corrupt: malformed header ({exc})") from exc


def _calibration_to_dict(calib: Calibration) -> dict[str, Any]:
    cam = calib.camera
    return {
        "fx": float(cam.fx), "fy": float(cam.fy), "cx": float(cam.cx), "cy": float(cam.cy),
        "width": int(cam.width), "height": int(cam.height),
        "dist": [float(d) for d in cam.dist], "fps": float(calib.fps),
        "baseline_m": _opt_float(calib.baseline_m), "bf": _opt_float(calib.bf),
        "depth_factor": _opt_float(calib.depth_factor), "th_depth": float(calib.th_depth),
        "rgb_order": bool(calib.rgb_order),
    }


def _calibration_from_dict(d: dict[str, Any]) -> Calibration:
    cam = PinholeCamera(d["fx"], d["fy"], d["cx"], d["cy"], int(d["width"]), int(d["height"]),
                        tuple(float(x) for x in d["dist"]))
    return Calibration(cam, d["fps"], d["baseline_m"], d["bf"], d["depth_factor"],
                       d["th_depth"], bool(d["rgb_order"]))


def _opt_float(x: float | None) -> float | None:
    return None if x is None else float(x)


def _check_same_camera(path: Path, stored: Calibration, given: Calibration) -> None:
    """Raise unless ``given`` has the stored intrinsics, image size and distortion."""
    a, b = stored.camera, given.camera
    intr_a = np.array([a.fx, a.fy, a.cx, a.cy])
    intr_b = np.array([b.fx, b.fy, b.cx, b.cy])
    scale = np.maximum(np.maximum(np.abs(intr_a), np.abs(intr_b)), 1.0)
    same = bool(np.all(np.abs(intr_a - intr_b) <= _INTRINSIC_RTOL * scale))
    same = same and (a.width, a.height) == (b.width, b.height)
    dist_a, dist_b = np.zeros(8), np.zeros(8)
    dist_a[: len(a.dist)], dist_b[: len(b.dist)] = a.dist, b.dist
    same = same and bool(np.allclose(dist_a, dist_b, rtol=_INTRINSIC_RTOL, atol=1e-12))
    if not same:
        raise MapFileError(f"map file {path} was made with another camera: stored "
                           f"{_describe(a)}, given {_describe(b)}")
    for name in ("baseline_m", "bf", "depth_factor"):
        if getattr(stored, name) != getattr(given, name):
            log.warning("map file %s: %s was %s, now %s", path, name, getattr(stored, name),
                        getattr(given, name))


def _describe(cam: PinholeCamera) -> str:
    dist = ", ".join(f"{d:g}" for d in cam.dist)
    return (f"fx={cam.fx:g} fy={cam.fy:g} cx={cam.cx:g} cy={cam.cy:g} "
            f"{cam.width}x{cam.height} dist=({dist})")


# --- files --------------------------------------------------------------------
def _open(path: Path) -> IO[bytes]:
    """Open a map file for reading, turning OS errors into :class:`MapFileError`."""
    if path.is_dir():
        raise MapFileError(f"{path} is a directory, not a map file")
    try:
        return open(path, "rb")
    except FileNotFoundError as exc:
        raise MapFileError(f"map file {path} does not exist") from exc
    except OSError as exc:
        raise MapFileError(f"cannot read map file {path}: {exc.strerror or exc}") from exc


def _read(path: Path, fh: IO[bytes], n: int) -> bytes:
    try:
        return fh.read(n)
    except OSError as exc:
        raise MapFileError(f"cannot read map file {path}: {exc.strerror or exc}") from exc


def _write_chunks(fh: IO[bytes], chunks: Iterable[Chunk]) -> None:
    for c in chunks:
        fh.write(c)


def _atomic_write(path: Path, chunks: list[Chunk]) -> None:
    """Write ``chunks`` to a temporary file beside ``path``, fsync it, rename it over
    ``path`` and fsync the directory. On any error the temporary file is removed."""
    directory = path.parent
    if path.is_dir():
        raise MapFileError(f"cannot write map file {path}: it is a directory")
    if not directory.is_dir():
        raise MapFileError(f"cannot write map file {path}: directory {directory} does not exist")
    _remove_stale_temps(path)
    tmp = directory / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies
    try:
        with os.fdopen(fd, "wb") as fh:
            _write_chunks(fh, chunks)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable (not supported everywhere; best effort)."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove_stale_temps(path: Path) -> None:
    """Delete temporary files of ``path`` left by saving processes that were killed."""
    if os.name != "posix":
        return
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        parts = tmp.name[len(path.name) + 2:].split(".")
        if len(parts) != 3 or not parts[0].isdigit() or int(parts[0]) == os.getpid():
            continue
        try:
            os.kill(int(parts[0]), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                tmp.unlink()
                log.info("removed %s left by an interrupted save", tmp)
        except OSError:
            continue


# --- map <-> arrays -----------------------------------------------------------
# name -> (dtype or None for any numeric, trailing shape, length group). A group is
# "K" (keyframes), "P" (points), "K+1"/"P+1" (offsets) or the name of a CSR
# group whose length is the last entry of its offsets array (_CSR_OFFSETS).
_SPEC: dict[str, tuple[str | None, tuple[int, ...], str]] = {
    "kf.id": ("<i8", (), "K"), "kf.frame_id": ("<i8", (), "K"),
    "kf.timestamp": ("<f8", (), "K"), "kf.size": ("<i8", (2,), "K"),
    "kf.bad": ("|b1", (), "K"), "kf.parent_id": ("<i8", (), "K"),
    "kf.T_cam_world": ("<f8", (4, 4), "K"),
    "kf.has_T_cam_parent": ("|b1", (), "K"), "kf.T_cam_parent": ("<f8", (4, 4), "K"),
    "kf.has_frame_T_cam_world": ("|b1", (), "K"),
    "kf.frame_T_cam_world": ("<f8", (4, 4), "K"),
    "kf.kp_offsets": ("<i8", (), "K+1"), "kf.covis_offsets": ("<i8", (), "K+1"),
    "kf.ordered_offsets": ("<i8", (), "K+1"), "kf.children_offsets": ("<i8", (), "K+1"),
    "kf.loop_offsets": ("<i8", (), "K+1"),
    "kp.uv": ("<f8", (2,), "kp"), "kp.octave": ("<i4", (), "kp"),
    "kp.descriptors": ("|u1", (32,), "kp"), "kp.depth_m": ("<f8", (), "kp"),
    "kp.u_right": ("<f8", (), "kp"), "kp.inv_sigma2": ("<f8", (), "kp"),
    "kp.point_id": ("<i8", (), "kp"), "kp.outlier": ("|b1", (), "kp"),
    "covis.kf_id": ("<i8", (), "covis"), "covis.weight": ("<i8", (), "covis"),
    "ordered.kf_id": ("<i8", (), "ordered"), "children.kf_id": ("<i8", (), "children"),
    "loop.kf_id": ("<i8", (), "loop"),
    "pt.id": ("<i8", (), "P"), "pt.xyz_world": ("<f8", (3,), "P"),
    "pt.descriptor": ("|u1", (32,), "P"), "pt.normal": ("<f8", (3,), "P"),
    "pt.min_dist": ("<f8", (), "P"), "pt.max_dist": ("<f8", (), "P"),
    "pt.n_visible": ("<i8", (), "P"), "pt.n_found": ("<i8", (), "P"),
    "pt.ref_kf_id": ("<i8", (), "P"), "pt.first_kf_id": ("<i8", (), "P"),
    "pt.bad": ("|b1", (), "P"), "pt.replaced_by": ("<i8", (), "P"),
    "pt.obs_offsets": ("<i8", (), "P+1"),
    "obs.kf_id": ("<i8", (), "obs"), "obs.kp_idx": ("<i8", (), "obs"),
}
_CSR_OFFSETS = {"kp": "kf.kp_offsets", "covis": "kf.covis_offsets",
                "ordered": "kf.ordered_offsets", "children": "kf.children_offsets",
                "loop": "kf.loop_offsets", "obs": "pt.obs_offsets", **IMAGE_OFFSETS}
_SPEC |= image_spec()  # keyframe images (slam.map.image_codec)
_SCALARS = ("next_kf_id", "next_point_id", "origin_kf_id", "map_version", "scale_factor",
            "n_levels")


def _encode_map(m: Map) -> tuple[dict[str, NDArray[Any]], dict[str, Any]]:
    """Copy the map into bulk arrays (see _SPEC) and scalars; the caller holds the lock.

    Keypoint ``point_ids`` naming no live point (left by tracking when a point was
    erased before local mapping took the keyframe) are stored as -1: every reader
    treats the two alike.
    """
    arrays = {**_keyframe_arrays(list(m.keyframes.values())),
              **_point_arrays(list(m.points.values()), m.store)}
    pid = arrays["kp.point_id"]
    stale = (pid >= 0) & ~np.isin(pid, arrays["pt.id"])
    if stale.any():
        log.debug("%d keypoints name erased map points; stored as -1", int(stale.sum()))
        arrays["kp.point_id"] = np.where(stale, -1, pid)
    scalars = {"next_kf_id": int(m._next_kf), "next_point_id": int(m._next_pt),
               "origin_kf_id": int(m.origin_kf_id), "map_version": int(m.version),
               "scale_factor": float(m.scale_factor), "n_levels": int(m.n_levels)}
    return arrays, scalars


def _csr(lists: list[list[int]]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Offsets (len+1,) and the concatenated int64 values of a list of int lists."""
    offsets = np.zeros(len(lists) + 1, np.int64)
    np.cumsum([len(x) for x in lists], out=offsets[1:])
    flat = np.fromiter(itertools.chain.from_iterable(lists), np.int64, int(offsets[-1]))
    return offsets, flat


def _cat(parts: list[Any], dtype: Any, tail: tuple[int, ...] = ()) -> NDArray[Any]:
    """Concatenate per-keyframe arrays (each reshaped to (-1, *tail)) as ``dtype``."""
    return np.concatenate([np.zeros((0, *tail), dtype),
                           *(np.asarray(p, dtype).reshape(-1, *tail) for p in parts)])


def _poses(poses: list[NDArray[np.float64] | None]) -> tuple[NDArray[Any], NDArray[Any]]:
    """A (K,) 'present' mask and (K, 4, 4) poses (zeros where absent)."""
    has = np.array([p is not None for p in poses], bool)
    out = np.zeros((len(poses), 4, 4))
    for i, p in enumerate(poses):
        if p is not None:
            out[i] = p
    return has, out


def _keyframe_arrays(kfs: list[KeyFrame]) -> dict[str, NDArray[Any]]:
    frames = [kf.frame for kf in kfs]
    a: dict[str, NDArray[Any]] = {
        "kf.id": np.array([kf.id for kf in kfs], np.int64),
        "kf.frame_id": np.array([f.id for f in frames], np.int64),
        "kf.timestamp": np.array([f.timestamp for f in frames], np.float64),
        "kf.size": np.array([(f.width, f.height) for f in frames], np.int64).reshape(-1, 2),
        "kf.bad": np.array([kf.bad for kf in kfs], bool),
        "kf.parent_id": np.array([kf.parent_id for kf in kfs], np.int64),
        "kf.T_cam_world": _poses([kf.T_cam_world for kf in kfs])[1],
    }
    a["kf.has_T_cam_parent"], a["kf.T_cam_parent"] = _poses([kf.T_cam_parent for kf in kfs])
    a["kf.has_frame_T_cam_world"], a["kf.frame_T_cam_world"] = _poses(
        [f.T_cam_world for f in frames])
    a["kf.kp_offsets"] = np.zeros(len(kfs) + 1, np.int64)
    np.cumsum([len(f) for f in frames], out=a["kf.kp_offsets"][1:])
    for name, attr, dtype, tail in (
        ("kp.uv", "uv", np.float64, (2,)), ("kp.octave", "octave", np.int32, ()),
        ("kp.descriptors", "descriptors", np.uint8, (32,)),
        ("kp.depth_m", "depth_m", np.float64, ()), ("kp.u_right", "u_right", np.float64, ()),
        ("kp.inv_sigma2", "inv_sigma2", np.float64, ()),
        ("kp.point_id", "point_ids", np.int64, ()), ("kp.outlier", "outlier", bool, ()),
    ):
        a[name] = _cat([getattr(f, attr) for f in frames], dtype, tail)
        if len(a[name]) != a["kf.kp_offsets"][-1]:
            raise ValueError(f"a keyframe's Frame.{attr} does not have one row per keypoint")
    a["kf.covis_offsets"], a["covis.kf_id"] = _csr([list(kf.covisible) for kf in kfs])
    a["covis.weight"] = _csr([list(kf.covisible.values()) for kf in kfs])[1]
    a["kf.ordered_offsets"], a["ordered.kf_id"] = _csr([kf.ordered_covisible for kf in kfs])
    a["kf.children_offsets"], a["children.kf_id"] = _csr([sorted(kf.children) for kf in kfs])
    a["kf.loop_offsets"], a["loop.kf_id"] = _csr([sorted(kf.loop_edges) for kf in kfs])
    return a


def _point_arrays(pts: list[MapPoint], store: PointStore) -> dict[str, NDArray[Any]]:
    ids = np.array([mp.id for mp in pts], np.int64)
    obs_offsets, obs_kf = _csr([list(mp.observations) for mp in pts])
    return {
        "pt.id": ids, "pt.xyz_world": store.xyz[ids].astype(np.float64),
        "pt.descriptor": store.desc[ids].astype(np.uint8),
        "pt.normal": store.normal[ids].astype(np.float64),
        "pt.min_dist": store.min_dist[ids].astype(np.float64),
        "pt.max_dist": store.max_dist[ids].astype(np.float64),
        "pt.n_visible": store.n_visible[ids].astype(np.int64),
        "pt.n_found": store.n_found[ids].astype(np.int64),
        "pt.ref_kf_id": np.array([mp.ref_kf_id for mp in pts], np.int64),
        "pt.first_kf_id": np.array([mp.first_kf_id for mp in pts], np.int64),
        "pt.bad": np.array([mp.bad for mp in pts], bool),
        "pt.replaced_by": np.array([mp.replaced_by for mp in pts], np.int64),
        "pt.obs_offsets": obs_offsets, "obs.kf_id": obs_kf,
        "obs.kp_idx": _csr([list(mp.observations.values()) for mp in pts])[1],
    }


def _decode_map(a: dict[str, NDArray[Any]], s: dict[str, Any]) -> Map:
    """Rebuild a :class:`Map` from validated arrays; ValueError names what is wrong."""
    _check_arrays(a, s)
    _check_references(a, s)
    m = Map(float(s["scale_factor"]), int(s["n_levels"]))
    # Map offers no setter for its id counters; they must continue where the run stopped.
    m._next_kf, m._next_pt = int(s["next_kf_id"]), int(s["next_point_id"])
    m.origin_kf_id, m.version = int(s["origin_kf_id"]), int(s["map_version"])
    for kf in _rebuild_keyframes(a):
        m.keyframes[kf.id] = kf
    _rebuild_points(m, a)
    return m


def _check_arrays(a: dict[str, NDArray[Any]], s: dict[str, Any]) -> None:
    """Every array present with its dtype, shape and length; offsets well formed."""
    missing = [n for n in _SPEC if n not in a] + [n for n in _SCALARS if n not in s]
    if missing:
        raise ValueError(f"missing fields {missing}")
    lengths = {"K": len(a["kf.id"]), "P": len(a["pt.id"])}
    lengths["K+1"], lengths["P+1"] = lengths["K"] + 1, lengths["P"] + 1
    for name, (dtype, tail, group) in sorted(_SPEC.items(), key=lambda kv: kv[1][2] in
                                             _CSR_OFFSETS):
        arr = a[name]
        if dtype is not None and arr.dtype.str != dtype:
            raise ValueError(f"{name} has dtype {arr.dtype.str}, expected {dtype}")
        if group in _CSR_OFFSETS and group not in lengths:
            off = a[_CSR_OFFSETS[group]]
            if off[0] != 0 or np.any(np.diff(off) < 0):
                raise ValueError(f"{_CSR_OFFSETS[group]} is not a valid offsets array")
            lengths[group] = int(off[-1])
        if arr.shape != (lengths[group], *tail):
            raise ValueError(f"{name} has shape {arr.shape}, expected {(lengths[group], *tail)}")
    check_image_arrays(a)


def _check_references(a: dict[str, NDArray[Any]], s: dict[str, Any]) -> None:
    """Ids unique and below the counters; every reference names an existing item."""
    kf_ids, pt_ids = a["kf.id"], a["pt.id"]
    for what, ids, nxt in (("keyframe", kf_ids, s["next_kf_id"]),
                           ("point", pt_ids, s["next_point_id"])):
        if len(np.unique(ids)) != len(ids) or np.any(ids < 0) or np.any(ids >= nxt):
            raise ValueError(f"{what} ids are duplicated or outside [0, {nxt})")
    for name in ("covis.kf_id", "ordered.kf_id", "children.kf_id", "loop.kf_id", "obs.kf_id"):
        bad = ~np.isin(a[name], kf_ids)
        if bad.any():
            raise ValueError(f"{name} names missing keyframe {int(a[name][bad][0])}")
    for name, ids, value in (("kf.parent_id", kf_ids, a["kf.parent_id"]),
                             ("origin_kf_id", kf_ids, np.array([s["origin_kf_id"]])),
                             ("kp.point_id", pt_ids, a["kp.point_id"])):
        bad = (value != -1) & ~np.isin(value, ids)
        if bad.any():
            raise ValueError(f"{name} names missing item {int(value[bad][0])}")
    order = np.argsort(kf_ids)
    pos = order[np.searchsorted(kf_ids[order], a["obs.kf_id"])] if len(kf_ids) else order
    n_kp = np.diff(a["kf.kp_offsets"])[pos]
    kp_idx = a["obs.kp_idx"]
    bad = (kp_idx < 0) | (kp_idx >= n_kp)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"an observation names keypoint {int(kp_idx[i])} of keyframe "
                         f"{int(a['obs.kf_id'][i])}, which has {int(n_kp[i])}")


def _slices(offsets: NDArray[np.int64]) -> list[slice]:
    bounds = offsets.tolist()
    return [slice(lo, hi) for lo, hi in itertools.pairwise(bounds)]


def _rebuild_keyframes(a: dict[str, NDArray[Any]]) -> list[KeyFrame]:
    kp, cov, ordd = _slices(a["kf.kp_offsets"]), _slices(a["kf.covis_offsets"]), _slices(
        a["kf.ordered_offsets"])
    child, loop = _slices(a["kf.children_offsets"]), _slices(a["kf.loop_offsets"])
    images = decode_image_arrays(a)
    cov_id, cov_w = a["covis.kf_id"].tolist(), a["covis.weight"].tolist()
    ord_id, child_id, loop_id = (a[n].tolist() for n in ("ordered.kf_id", "children.kf_id",
                                                         "loop.kf_id"))
    ids, frame_ids, stamps, sizes, bad, parent = (a[n].tolist() for n in (
        "kf.id", "kf.frame_id", "kf.timestamp", "kf.size", "kf.bad", "kf.parent_id"))
    kfs = []
    for i, kf_id in enumerate(ids):
        k = kp[i]
        frame = Frame(
            id=frame_ids[i], timestamp=stamps[i], uv=a["kp.uv"][k].copy(),
            octave=a["kp.octave"][k].copy(), descriptors=a["kp.descriptors"][k].copy(),
            depth_m=a["kp.depth_m"][k].copy(), u_right=a["kp.u_right"][k].copy(),
            inv_sigma2=a["kp.inv_sigma2"][k].copy(), width=sizes[i][0], height=sizes[i][1],
            color=images["color"][i], T_cam_world=_pose_or_none(a, "kf.frame_T_cam_world", i),
            point_ids=a["kp.point_id"][k].copy(), outlier=a["kp.outlier"][k].copy(),
            image=images["image"][i], right_image=images["right"][i],
            depth_image=images["depth"][i],
        )
        kfs.append(KeyFrame(
            id=kf_id, frame=frame, T_cam_world=a["kf.T_cam_world"][i].copy(),
            covisible=dict(zip(cov_id[cov[i]], cov_w[cov[i]])),
            ordered_covisible=ord_id[ordd[i]], parent_id=parent[i],
            children=set(child_id[child[i]]), bad=bad[i],
            T_cam_parent=_pose_or_none(a, "kf.T_cam_parent", i),
            loop_edges=set(loop_id[loop[i]]),
        ))
    return kfs


def _pose_or_none(a: dict[str, NDArray[Any]], name: str, i: int) -> NDArray[np.float64] | None:
    has = a[name.replace("kf.", "kf.has_", 1)]
    return a[name][i].copy() if has[i] else None


def _rebuild_points(m: Map, a: dict[str, NDArray[Any]]) -> None:
    """Create the map points (in their saved order), then fill the store in bulk."""
    ids = a["pt.id"]
    st = m.store
    xyz, desc = a["pt.xyz_world"], a["pt.descriptor"]
    obs = _slices(a["pt.obs_offsets"])
    obs_kf, obs_idx = a["obs.kf_id"].tolist(), a["obs.kp_idx"].tolist()
    ref, first, bad, repl = (a[n].tolist() for n in ("pt.ref_kf_id", "pt.first_kf_id",
                                                     "pt.bad", "pt.replaced_by"))
    for j, pid in enumerate(ids.tolist()):
        mp = MapPoint(st, pid, xyz[j], desc[j], ref_kf_id=ref[j], first_kf_id=first[j])
        mp.observations = dict(zip(obs_kf[obs[j]], obs_idx[obs[j]]))
        mp.bad, mp.replaced_by = bad[j], repl[j]
        m.points[pid] = mp
    st.alive[:] = False
    st.alive[ids] = ~a["pt.bad"]
    st.normal[ids] = a["pt.normal"]
    st.min_dist[ids], st.max_dist[ids] = a["pt.min_dist"], a["pt.max_dist"]
    st.n_visible[ids], st.n_found[ids] = a["pt.n_visible"], a["pt.n_found"]

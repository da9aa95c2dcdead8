"""The header of a map file: written by :func:`make_header`, read back by
:func:`info_from_header`, which type-checks every field (``docs/map_format.md``).

A header is untrusted input: every field is checked for its type and range before
anything is derived from it (a ``payload.length`` of ``"12"``, ``None`` or NaN, a
negative count, a focal length of ``1e308``, an unknown sensor are all refused
with :class:`~slam.errors.MapFileError`, exit code 8).
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

import slam
from slam.camera.pinhole import Calibration, PinholeCamera
from slam.config import SENSORS
from slam.errors import CalibrationError, MapFileError

log = logging.getLogger(__name__)

PAYLOAD_ENCODING = "msgpack-arrays-le"
MAX_COUNT = 2**53  # counts and ids: exact in a float64, as JSON readers need
MAX_IMAGE_SIDE = 16384  # pixels: the camera's width and height
MAX_FOCAL_PX = 1e6  # pixels: fx, fy
MAX_PIXEL_COORD = 1e6  # pixels: |cx|, |cy|, |keypoint u, v|
MAX_DISTORTION = 1e3  # |k1| .. |k6|, |p1|, |p2|
MAX_FPS = 1e4  # frames per second
MAX_METRIC = 1e9  # baseline (m), bf (m px), depth factor (units per m), th_depth
MAX_TEXT = 256  # characters of package_version and created
INTRINSIC_RTOL = 1e-6  # the same camera: intrinsics equal within this relative tolerance
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")

Chunk = bytes | memoryview


@dataclass(frozen=True)
class MapFileInfo:
    """What the header of a map file says (readable without loading the map).

    ``n_keyframes`` counts every keyframe, culled ones too (``n_bad_keyframes``);
    ``n_points`` live map points; ``n_keypoints`` features over all keyframes;
    ``payload_bytes`` the payload's length in bytes. ``path`` is the file's path,
    or its name within a map directory when loaded from an open file.
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


# --- writing ----------------------------------------------------------------------
def make_header(counts: dict[str, int], chunks: Iterable[Chunk], calibration: Calibration,
                sensor: str, format_version: int) -> dict[str, Any]:
    """The header of a payload made of ``chunks`` (length and SHA-256 computed here)."""
    digest = hashlib.sha256()
    length = 0
    for c in chunks:
        digest.update(c)
        length += len(c)
    return {
        "format_version": format_version,
        "package_version": slam.__version__,
        "created": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "sensor": sensor,
        "calibration": calibration_to_dict(calibration),
        "counts": dict(counts),
        "payload": {"encoding": PAYLOAD_ENCODING, "length": length,
                    "sha256": digest.hexdigest()},
    }


def calibration_to_dict(calib: Calibration) -> dict[str, Any]:
    cam = calib.camera
    return {
        "fx": float(cam.fx), "fy": float(cam.fy), "cx": float(cam.cx), "cy": float(cam.cy),
        "width": int(cam.width), "height": int(cam.height),
        "dist": [float(d) for d in cam.dist], "fps": float(calib.fps),
        "baseline_m": _opt_float(calib.baseline_m), "bf": _opt_float(calib.bf),
        "depth_factor": _opt_float(calib.depth_factor), "th_depth": float(calib.th_depth),
        "rgb_order": bool(calib.rgb_order),
    }


def _opt_float(x: float | None) -> float | None:
    return None if x is None else float(x)


# --- typed fields -------------------------------------------------------------------
def _get(d: Any, key: str) -> Any:
    if not isinstance(d, Mapping):
        raise ValueError(f"expected a map holding {key!r}, got {type(d).__name__}")
    if key not in d:
        raise ValueError(f"{key!r} is missing")
    return d[key]


def integer(d: Any, key: str, lo: int, hi: int) -> int:
    """``d[key]``: an int (not a bool) in [lo, hi]; ValueError otherwise."""
    v = _get(d, key)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ValueError(f"{key!r} must be an integer in [{lo}, {hi}], got {v!r:.40}")
    return v


def real(d: Any, key: str, lo: float, hi: float, *, open_lo: bool = False) -> float:
    """``d[key]``: a finite int or float in [lo, hi] (or (lo, hi]); ValueError otherwise."""
    v = _get(d, key)
    ok = not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v)
    ok = ok and (lo < v if open_lo else lo <= v) and v <= hi
    if not ok:
        bracket = "(" if open_lo else "["
        raise ValueError(f"{key!r} must be a finite number in {bracket}{lo:g}, {hi:g}], "
                         f"got {v!r:.40}")
    return float(v)


def _opt_real(d: Any, key: str, hi: float) -> float | None:
    return None if _get(d, key) is None else real(d, key, 0.0, hi, open_lo=True)


def text(d: Any, key: str, max_len: int = MAX_TEXT) -> str:
    v = _get(d, key)
    if not isinstance(v, str) or len(v) > max_len:
        raise ValueError(f"{key!r} must be a string of at most {max_len} characters")
    return v


# --- reading ----------------------------------------------------------------------
def calibration_from_dict(d: Any) -> Calibration:
    """A :class:`Calibration` from a header's ``calibration`` map, every field checked
    like a calibration file's (finite, positive focal lengths, sane ranges)."""
    width = integer(d, "width", 1, MAX_IMAGE_SIDE)
    height = integer(d, "height", 1, MAX_IMAGE_SIDE)
    dist = _get(d, "dist")
    if not isinstance(dist, list | tuple) or len(dist) not in (4, 5, 8):
        raise ValueError("'dist' must be a list of 4, 5 or 8 numbers")
    coeffs = tuple(real({"dist": x}, "dist", -MAX_DISTORTION, MAX_DISTORTION) for x in dist)
    rgb_order = _get(d, "rgb_order")
    if not isinstance(rgb_order, bool):
        raise ValueError("'rgb_order' must be a boolean")
    cam = PinholeCamera(
        real(d, "fx", 0.0, MAX_FOCAL_PX, open_lo=True),
        real(d, "fy", 0.0, MAX_FOCAL_PX, open_lo=True),
        real(d, "cx", -MAX_PIXEL_COORD, MAX_PIXEL_COORD),
        real(d, "cy", -MAX_PIXEL_COORD, MAX_PIXEL_COORD), width, height, coeffs)
    return Calibration(cam, real(d, "fps", 0.0, MAX_FPS, open_lo=True),
                       _opt_real(d, "baseline_m", MAX_METRIC), _opt_real(d, "bf", MAX_METRIC),
                       _opt_real(d, "depth_factor", MAX_METRIC),
                       real(d, "th_depth", 0.0, MAX_METRIC, open_lo=True), rgb_order)


def payload_length(header: Any) -> int:
    """The payload length the header declares (bytes; ValueError when not an int >= 0)."""
    return integer(_get(header, "payload"), "length", 0, 2**63 - 1)


def info_from_header(where: str, path: Path, header: Any, version: int) -> MapFileInfo:
    """The checked header fields; MapFileError (``where`` names the file) when any is
    missing, of the wrong type or out of range, or disagrees with the prefix ``version``."""
    try:
        if integer(header, "format_version", 0, 2**32 - 1) != version:
            raise ValueError("'format_version' disagrees with the prefix")
        payload = _get(header, "payload")
        if _get(payload, "encoding") != PAYLOAD_ENCODING:
            raise ValueError(f"unknown payload encoding {str(payload['encoding'])[:40]!r}")
        length = payload_length(header)
        sha = text(payload, "sha256")
        if not _SHA256_HEX.fullmatch(sha):
            raise ValueError("'sha256' must be 64 lowercase hex digits")
        sensor = _get(header, "sensor")
        if sensor not in SENSORS:
            raise ValueError(f"'sensor' must be one of {', '.join(SENSORS)}")
        counts = _get(header, "counts")
        n = {k: integer(counts, k, 0, min(MAX_COUNT, length)) for k in
             ("keyframes", "bad_keyframes", "points", "observations", "keypoints")}
        if n["bad_keyframes"] > n["keyframes"]:
            raise ValueError("more culled keyframes than keyframes")
        return MapFileInfo(
            path=path, format_version=version,
            package_version=text(header, "package_version"),
            created=datetime.fromisoformat(text(header, "created")), sensor=str(sensor),
            calibration=calibration_from_dict(_get(header, "calibration")),
            n_keyframes=n["keyframes"], n_bad_keyframes=n["bad_keyframes"],
            n_points=n["points"], n_observations=n["observations"],
            n_keypoints=n["keypoints"], payload_bytes=length, payload_sha256=sha)
    except (ValueError, TypeError, CalibrationError) as exc:
        raise MapFileError(f"map file {where} is corrupt: malformed header ({exc})") from exc


# --- the same camera ----------------------------------------------------------------
def check_same_camera(where: str, stored: Calibration, given: Calibration) -> None:
    """Raise unless ``given`` has the stored intrinsics, image size and distortion."""
    a, b = stored.camera, given.camera
    intr_a = np.array([a.fx, a.fy, a.cx, a.cy])
    intr_b = np.array([b.fx, b.fy, b.cx, b.cy])
    scale = np.maximum(np.maximum(np.abs(intr_a), np.abs(intr_b)), 1.0)
    same = bool(np.all(np.abs(intr_a - intr_b) <= INTRINSIC_RTOL * scale))
    same = same and (a.width, a.height) == (b.width, b.height)
    dist_a, dist_b = np.zeros(8), np.zeros(8)
    dist_a[: len(a.dist)], dist_b[: len(b.dist)] = a.dist, b.dist
    same = same and bool(np.allclose(dist_a, dist_b, rtol=INTRINSIC_RTOL, atol=1e-12))
    if not same:
        raise MapFileError(f"map file {where} was made with another camera: stored "
                           f"{describe(a)}, given {describe(b)}")
    for name in ("baseline_m", "bf", "depth_factor"):
        if getattr(stored, name) != getattr(given, name):
            log.warning("map file %s: %s was %s, now %s", where, name, getattr(stored, name),
                        getattr(given, name))


def describe(cam: PinholeCamera) -> str:
    dist = ", ".join(f"{d:g}" for d in cam.dist)
    return (f"fx={cam.fx:g} fy={cam.fy:g} cx={cam.cx:g} cy={cam.cy:g} "
            f"{cam.width}x{cam.height} dist=({dist})")

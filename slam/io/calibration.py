"""Calibration readers: ORB-SLAM settings YAML, KITTI ``calib.txt``, TUM published values.

``load_calibration`` reads an ORB-SLAM2 settings file:

- required: ``Camera.fx``, ``Camera.fy``, ``Camera.cx``, ``Camera.cy`` (pixels, > 0 focal);
- distortion ``Camera.k1 k2 p1 p2`` (all four or none; none = no distortion) and
  optional ``Camera.k3``;
- image size ``Camera.width``/``Camera.height``: required unless the caller passes
  ``image_size`` (sources pass the size of the first image); when both are given
  they must agree;
- optional: ``Camera.fps`` (default 30, ORB-SLAM treats 0 as 30), ``Camera.bf``
  (stereo/RGB-D baseline x fx, pixels x metres), ``ThDepth`` (default 40),
  ``DepthMapFactor`` (depth metres = raw / factor), ``Camera.RGB`` (1 = RGB order).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from slam.camera.pinhole import Calibration, PinholeCamera
from slam.errors import CalibrationError
from slam.io.settings import SettingValue, read_opencv_yaml

log = logging.getLogger(__name__)

ImageSize = tuple[int, int]  # (width, height) in pixels

# Published TUM RGB-D intrinsics (fx, fy, cx, cy) and distortion (k1, k2, p1, p2, k3).
_TUM_CAMERAS: dict[str, tuple[tuple[float, float, float, float], tuple[float, ...]]] = {
    "freiburg1": (
        (517.306408, 516.469215, 318.643040, 255.313989),
        (0.262383, -0.953104, -0.005358, 0.002628, 1.163314),
    ),
    "freiburg2": (
        (520.908620, 521.007327, 325.141442, 249.701764),
        (0.231222, -0.784899, -0.003257, -0.000105, 0.917205),
    ),
    "freiburg3": ((535.4, 539.2, 320.1, 247.6), (0.0, 0.0, 0.0, 0.0, 0.0)),
}
TUM_DEPTH_FACTOR = 5000.0
KITTI_FPS = 10.0
KITTI_TH_DEPTH = 35.0  # ORB-SLAM2's KITTI settings use 35 baselines


def _number(values: dict[str, SettingValue], key: str, path: Path) -> float | None:
    """``values[key]`` as a finite float, None when absent; CalibrationError otherwise."""
    if key not in values:
        return None
    raw = values[key]
    if isinstance(raw, str) or (isinstance(raw, np.ndarray) and raw.size != 1):
        raise CalibrationError(f"{path}: {key} must be a number, got {raw!r}")
    value = float(np.asarray(raw).reshape(-1)[0])
    if not np.isfinite(value):
        raise CalibrationError(f"{path}: {key} must be finite, got {value}")
    return value


def _required(values: dict[str, SettingValue], key: str, path: Path) -> float:
    value = _number(values, key, path)
    if value is None:
        raise CalibrationError(f"{path}: missing required key {key}")
    return value


def _image_size(
    values: dict[str, SettingValue], path: Path, image_size: ImageSize | None
) -> ImageSize:
    w = _number(values, "Camera.width", path)
    h = _number(values, "Camera.height", path)
    if w is None or h is None:
        if image_size is None:
            raise CalibrationError(
                f"{path}: missing Camera.width/Camera.height and no image to take the size from"
            )
        return int(image_size[0]), int(image_size[1])
    if w <= 0 or h <= 0 or w != int(w) or h != int(h):
        raise CalibrationError(f"{path}: invalid image size Camera.width={w} Camera.height={h}")
    size = (int(w), int(h))
    if image_size is not None and tuple(image_size) != size:
        raise CalibrationError(
            f"{path}: Camera.width/height {size[0]}x{size[1]} do not match the images "
            f"({image_size[0]}x{image_size[1]})"
        )
    return size


def _distortion(values: dict[str, SettingValue], path: Path) -> tuple[float, ...]:
    names = ("Camera.k1", "Camera.k2", "Camera.p1", "Camera.p2")
    found = [_number(values, k, path) for k in names]
    if all(v is None for v in found):
        return (0.0, 0.0, 0.0, 0.0, 0.0)
    missing = [k for k, v in zip(names, found) if v is None]
    if missing:
        raise CalibrationError(f"{path}: incomplete distortion, missing key {missing[0]}")
    k3 = _number(values, "Camera.k3", path) or 0.0
    return (*(float(v) for v in found if v is not None), k3)


def load_calibration(path: str | Path, image_size: ImageSize | None = None) -> Calibration:
    """Calibration from an ORB-SLAM2 settings file (see the module docstring).

    ``image_size`` is ``(width, height)`` of the images, used when the file has no
    ``Camera.width``/``Camera.height`` and checked against them otherwise.
    Raises :class:`CalibrationError` naming the file and key on any problem, values
    out of the ranges of :mod:`slam.camera.limits` included.
    """
    p = Path(path)
    values = read_opencv_yaml(p)
    fx, fy, cx, cy = (_required(values, f"Camera.{k}", p) for k in ("fx", "fy", "cx", "cy"))
    for key, v in (("Camera.fx", fx), ("Camera.fy", fy)):
        if v <= 0:
            raise CalibrationError(f"{p}: {key} must be positive, got {v}")
    width, height = _image_size(values, p, image_size)
    fps = _number(values, "Camera.fps", p) or 30.0
    bf = _number(values, "Camera.bf", p)
    factor = _number(values, "DepthMapFactor", p)
    th_depth = _number(values, "ThDepth", p)
    rgb = _number(values, "Camera.RGB", p)
    if bf is not None and bf <= 0:
        raise CalibrationError(f"{p}: Camera.bf must be positive, got {bf}")
    if factor is not None and factor <= 0:
        raise CalibrationError(f"{p}: DepthMapFactor must be positive, got {factor}")
    dist = _distortion(values, p)
    try:
        camera = PinholeCamera(fx, fy, cx, cy, width, height, dist)
        return Calibration(
            camera=camera,
            fps=fps,
            bf=bf,
            depth_factor=factor,
            th_depth=40.0 if th_depth is None else th_depth,
            rgb_order=True if rgb is None else bool(rgb),
        )
    except CalibrationError as exc:
        raise CalibrationError(f"{p}: {exc}") from exc


def _kitti_matrices(path: Path) -> dict[str, np.ndarray]:
    mats: dict[str, np.ndarray] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise CalibrationError(f"cannot read KITTI calibration {path}: {exc}") from exc
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        name, sep, rest = line.partition(":")
        if not sep:
            raise CalibrationError(f"{path}:{lineno}: expected 'NAME: numbers'")
        try:
            nums = np.array([float(x) for x in rest.split()], dtype=np.float64)
        except ValueError as exc:
            raise CalibrationError(f"{path}:{lineno}: {name.strip()} is not numeric") from exc
        mats[name.strip()] = nums
    return mats


def load_kitti_calib(calib_txt: str | Path, image_size: ImageSize) -> Calibration:
    """Rectified stereo calibration from a KITTI odometry ``calib.txt``.

    Intrinsics come from ``P0`` (left, 3x4), the baseline (metres) from
    ``(P0[0,3] - P1[0,3]) / fx``; ``image_size`` is ``(width, height)`` in pixels.
    """
    p = Path(calib_txt)
    if not p.is_file():
        raise CalibrationError(f"KITTI calibration not found: {p}")
    mats = _kitti_matrices(p)
    for key in ("P0", "P1"):
        if key not in mats:
            raise CalibrationError(f"{p}: missing key {key}")
        if mats[key].size != 12 or not np.all(np.isfinite(mats[key])):
            raise CalibrationError(f"{p}: {key} must hold 12 finite numbers")
    P0, P1 = mats["P0"].reshape(3, 4), mats["P1"].reshape(3, 4)
    fx, fy, cx, cy = (float(v) for v in (P0[0, 0], P0[1, 1], P0[0, 2], P0[1, 2]))
    if fx <= 0 or fy <= 0:
        raise CalibrationError(f"{p}: P0 has a non-positive focal length")
    baseline = float(P0[0, 3] - P1[0, 3]) / fx
    if baseline <= 0:
        raise CalibrationError(f"{p}: P0/P1 give a non-positive baseline {baseline}")
    try:
        camera = PinholeCamera(fx, fy, cx, cy, int(image_size[0]), int(image_size[1]))
        return Calibration(
            camera=camera,
            fps=KITTI_FPS,
            baseline_m=float(baseline),
            bf=float(baseline * fx),
            th_depth=KITTI_TH_DEPTH,
        )
    except CalibrationError as exc:
        raise CalibrationError(f"{p}: P0/P1: {exc}") from exc


def tum_calibration_for(sequence_name: str) -> Calibration | None:
    """Published TUM RGB-D calibration for a name containing freiburg1/2/3, else None.

    640x480, 30 Hz, depth factor 5000, ``bf`` 40, ``ThDepth`` 40.
    """
    match = re.search(r"freiburg([123])", sequence_name)
    if match is None:
        return None
    (fx, fy, cx, cy), dist = _TUM_CAMERAS[f"freiburg{match.group(1)}"]
    camera = PinholeCamera(fx, fy, cx, cy, 640, 480, dist)
    log.debug("using the published freiburg%s calibration for %s", match.group(1), sequence_name)
    return Calibration(
        camera=camera, fps=30.0, bf=40.0, depth_factor=TUM_DEPTH_FACTOR, th_depth=40.0
    )

"""What a real camera can be: the ranges every calibration value is checked against.

:class:`~slam.camera.pinhole.PinholeCamera` and :class:`~slam.camera.pinhole.Calibration`
call these checks when they are built, so every reader (ORB-SLAM settings, KITTI
``calib.txt``, EuRoC ``sensor.yaml``, the published TUM values, a map file's header,
the service's ``--calib``) refuses the same impossible values with a
:class:`CalibrationError` naming the field. The limits are generous: they exist to
stop a typo or a corrupt file (``fx = 1e308``, ``k1 = 1e20``) from reaching the
geometry, not to judge a calibration's quality.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from slam.errors import CalibrationError

MAX_IMAGE_SIDE_PX = 16384  # image width and height in 1..16384 px (a 268-megapixel square)
MAX_FOCAL_PER_SIDE = 100.0  # fx, fy <= 100 x max(width, height): a ~0.6 deg field of view
MIN_FOCAL_PER_SIDE = 0.01  # fx, fy >= 0.01 x max(width, height): a ~178 deg field of view
PRINCIPAL_POINT_MARGIN = 0.25  # cx, cy at most 1/4 of the image size outside it (off-centre crops)
# OpenCV distortion (k1 k2 p1 p2 [k3 [k4 k5 k6]]): real lenses give |k| of order 1 with the
# polynomial model and up to a few tens with the rational one (k4..k6, wide angle), tangential
# |p| of order 1e-3; fisheye lenses need another model altogether.
MAX_RADIAL_DISTORTION = 100.0  # |k1|..|k6|
MAX_TANGENTIAL_DISTORTION = 1.0  # |p1|, |p2|
MAX_FPS = 1000.0  # frame rate in (0, 1000] Hz
MAX_BASELINE_M = 10.0  # stereo baseline (or RGB-D virtual baseline bf / fx) in (0, 10] m
MIN_DEPTH_FACTOR = 1e-3  # depth image units per metre: from 1 per km ...
MAX_DEPTH_FACTOR = 1e6  # ... to 1 per micrometre (TUM: 5000, most sensors: 1000)
MAX_TH_DEPTH = 1000.0  # close/far depth threshold in baselines, in (0, 1000] (ORB-SLAM: 35-40)

_TANGENTIAL = (2, 3)  # positions of p1, p2 in OpenCV's coefficient vector
_NAMES = ("k1", "k2", "p1", "p2", "k3", "k4", "k5", "k6")


def _bad(field: str, value: float, rule: str) -> CalibrationError:
    return CalibrationError(f"{field} = {value:g} is out of range: {rule}")


def check_intrinsics(
    fx: float, fy: float, cx: float, cy: float, width: float, height: float
) -> None:
    """Raise :class:`CalibrationError` unless the image size (whole px), focal lengths (px)
    and principal point (px) are within the limits above."""
    for name, side in (("width", width), ("height", height)):
        if not 1 <= side <= MAX_IMAGE_SIDE_PX or side != int(side):
            raise _bad(f"image {name}", side, f"an integer in 1..{MAX_IMAGE_SIDE_PX} px")
    longest = max(width, height)
    lo, hi = MIN_FOCAL_PER_SIDE * longest, MAX_FOCAL_PER_SIDE * longest
    for name, f in (("fx", fx), ("fy", fy)):
        if not (math.isfinite(f) and lo <= f <= hi):
            raise _bad(name, f, f"focal lengths must be in [{lo:g}, {hi:g}] px for a "
                       f"{width}x{height} image")
    for name, c, side in (("cx", cx, width), ("cy", cy, height)):
        margin = PRINCIPAL_POINT_MARGIN * side
        if not (math.isfinite(c) and -margin <= c <= side + margin):
            raise _bad(name, c, f"the principal point must be within [{-margin:g}, "
                       f"{side + margin:g}] px for a {width}x{height} image")


def check_distortion(dist: Sequence[float]) -> None:
    """Raise :class:`CalibrationError` unless ``dist`` is 4, 5 or 8 finite OpenCV
    coefficients ``k1 k2 p1 p2 [k3 [k4 k5 k6]]`` within the limits above."""
    if len(dist) not in (4, 5, 8):
        raise CalibrationError(f"distortion needs 4, 5 or 8 coefficients, got {len(dist)}")
    for i, d in enumerate(dist):
        limit = MAX_TANGENTIAL_DISTORTION if i in _TANGENTIAL else MAX_RADIAL_DISTORTION
        if not (math.isfinite(d) and abs(d) <= limit):
            raise _bad(f"distortion {_NAMES[i]}", d, f"|{_NAMES[i]}| must be at most {limit:g}")


def check_fps(fps: float) -> None:
    """Raise :class:`CalibrationError` unless the frame rate (Hz) is in (0, MAX_FPS]."""
    if not (math.isfinite(fps) and 0 < fps <= MAX_FPS):
        raise _bad("fps", fps, f"the frame rate must be in (0, {MAX_FPS:g}] Hz")


def check_sensor(
    fx: float, fps: float, baseline_m: float | None, bf: float | None,
    depth_factor: float | None, th_depth: float,
) -> None:
    """Raise :class:`CalibrationError` unless the frame rate (Hz), stereo baseline (m),
    ``bf`` (px x m, baseline times ``fx`` px), depth factor (units per metre) and close
    depth threshold (baselines) are within the limits above; None means not given."""
    check_fps(fps)
    if baseline_m is not None and not (
            math.isfinite(baseline_m) and 0 < baseline_m <= MAX_BASELINE_M):
        raise _bad("baseline", baseline_m, f"a stereo baseline must be in (0, "
                   f"{MAX_BASELINE_M:g}] m")
    if bf is not None and not (math.isfinite(bf) and 0 < bf <= MAX_BASELINE_M * fx):
        raise _bad("bf", bf, f"baseline x fx must be in (0, {MAX_BASELINE_M:g} m x fx = "
                   f"{MAX_BASELINE_M * fx:g}]")
    if depth_factor is not None and not (
            math.isfinite(depth_factor) and MIN_DEPTH_FACTOR <= depth_factor <= MAX_DEPTH_FACTOR):
        raise _bad("depth factor", depth_factor, f"depth units per metre must be in "
                   f"[{MIN_DEPTH_FACTOR:g}, {MAX_DEPTH_FACTOR:g}]")
    if not (math.isfinite(th_depth) and 0 < th_depth <= MAX_TH_DEPTH):
        raise _bad("th_depth", th_depth, f"the close depth threshold must be in (0, "
                   f"{MAX_TH_DEPTH:g}] baselines")

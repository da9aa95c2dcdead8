"""Calibration ranges: impossible cameras are refused where calibrations are built."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from slam.camera import limits
from slam.camera.pinhole import Calibration, PinholeCamera
from slam.errors import CalibrationError
from slam.io.calibration import load_kitti_calib, tum_calibration_for
from slam.synthetic.source import make_synthetic_source

REPO = Path(__file__).resolve().parents[2]
GOOD = {"fx": 500.0, "fy": 500.0, "cx": 320.0, "cy": 240.0, "width": 640, "height": 480}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"fx": 1e308}, "fx"),  # issue 12, finding 7: accepted before
        ({"fy": 1e-6}, "fy"),
        ({"fx": 64001.0}, "fx"),  # just over 100 x 640
        ({"cx": 1e9}, "cx"),
        ({"cy": -200.0}, "cy"),  # more than a quarter of 480 above the image
        ({"width": 20000}, "width"),
        ({"height": 0}, "height"),
        ({"dist": (1e20, 0.0, 0.0, 0.0, 0.0)}, "k1"),  # issue 12, finding 7: accepted before
        ({"dist": (0.1, -101.0, 0.0, 0.0)}, "k2"),
        ({"dist": (0.1, 0.0, 2.0, 0.0, 0.0)}, "p1"),
        ({"dist": (0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1e4)}, "k6"),
    ],
)
def test_impossible_cameras_are_refused_naming_the_field(
    change: dict[str, object], field: str
) -> None:
    with pytest.raises(CalibrationError, match=field):
        PinholeCamera(**(GOOD | change))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"fps": 1e6}, "fps"),
        ({"fps": float("inf")}, "fps"),
        ({"baseline_m": 1e3}, "baseline"),
        ({"bf": float("nan")}, "bf"),
        ({"bf": -1.0}, "bf"),
        ({"bf": 500.0 * 11}, "bf"),  # an 11 m (virtual) baseline
        ({"depth_factor": float("inf")}, "depth factor"),
        ({"depth_factor": 1e9}, "depth factor"),
        ({"th_depth": 0.0}, "th_depth"),
    ],
)
def test_impossible_sensor_values_are_refused(change: dict[str, float], field: str) -> None:
    camera = PinholeCamera(**GOOD)  # type: ignore[arg-type]
    with pytest.raises(CalibrationError, match=field):
        Calibration(camera, **change)  # type: ignore[arg-type]


def test_limits_admit_the_edges_of_real_cameras() -> None:
    """A telephoto at the focal limit, a wide lens near the lower one, a rational-model
    wide-angle distortion, a principal point off a cropped image."""
    PinholeCamera(limits.MAX_FOCAL_PER_SIDE * 640, 64000.0, 320.0, 240.0, 640, 480)
    PinholeCamera(10.0, 10.0, 320.0, 240.0, 640, 480)
    PinholeCamera(300.0, 300.0, 700.0, -100.0, 640, 480, (25.0, 12.0, 1e-3, -1e-3, 0.5,
                                                          25.5, 15.0, 2.0))
    Calibration(PinholeCamera(**GOOD), fps=1000.0, baseline_m=10.0,  # type: ignore[arg-type]
                depth_factor=5000.0, th_depth=40.0)


def test_bundled_calibrations_pass() -> None:
    from slam.io.calibration import load_calibration

    for path in [*sorted((REPO / "datasets" / "calib").glob("*.yaml")),
                 *sorted((REPO / "datasets" / "sample").glob("*/*.yaml"))]:
        load_calibration(path, image_size=(640, 480))
    for name in ("freiburg1", "freiburg2", "freiburg3"):
        assert tum_calibration_for(name) is not None
    for sensor in ("mono", "stereo", "rgbd"):
        assert make_synthetic_source("loop", sensor).calibration is not None
    kitti = REPO.parent / "shared" / "datasets" / "kitti" / "sequences" / "06" / "calib.txt"
    if kitti.is_file() or os.environ.get("CI") == "true":
        assert load_kitti_calib(kitti, (1226, 370)).baseline_m == pytest.approx(0.537, abs=1e-3)

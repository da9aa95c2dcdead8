"""Calibration readers: ORB-SLAM settings, KITTI calib.txt, TUM published values."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from slam.errors import CalibrationError
from slam.io.calibration import load_calibration, load_kitti_calib, tum_calibration_for

REPO_ROOT = Path(__file__).resolve().parents[2]
CALIB = REPO_ROOT / "datasets" / "calib"

BASE = """%YAML:1.0
Camera.fx: 500.0
Camera.fy: 501.0
Camera.cx: 320.0
Camera.cy: 240.0
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "settings.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("name", "fx", "fy", "cx", "cy", "k1"),
    [
        ("rgbd_dataset_freiburg1_rpy", 517.306408, 516.469215, 318.643040, 255.313989, 0.262383),
        ("rgbd_dataset_freiburg2_xyz", 520.908620, 521.007327, 325.141442, 249.701764, 0.231222),
        ("rgbd_dataset_freiburg3_long_office", 535.4, 539.2, 320.1, 247.6, 0.0),
    ],
)
def test_tum_published_values(
    name: str, fx: float, fy: float, cx: float, cy: float, k1: float
) -> None:
    calib = tum_calibration_for(name)
    assert calib is not None
    cam = calib.camera
    assert (cam.fx, cam.fy, cam.cx, cam.cy, cam.dist[0]) == (fx, fy, cx, cy, k1)
    assert (cam.width, cam.height) == (640, 480)
    assert calib.depth_factor == 5000.0 and calib.bf == 40.0 and calib.th_depth == 40.0
    assert calib.fps == 30.0
    # the shipped settings file of the same camera must say the same
    digit = name.split("freiburg")[1][0]
    assert load_calibration(CALIB / f"TUM{digit}.yaml") == calib


def test_tum_unknown_name() -> None:
    assert tum_calibration_for("my_living_room") is None


def test_shared_tum1_settings_match_published(shared_datasets: Path) -> None:
    path = shared_datasets / "tum" / "rgbd_dataset_freiburg1_rpy" / "TUM1.yaml"
    assert load_calibration(path) == tum_calibration_for("freiburg1")


def test_defaults_and_size_from_images(tmp_path: Path) -> None:
    calib = load_calibration(_write(tmp_path, BASE), image_size=(752, 480))
    assert (calib.camera.width, calib.camera.height) == (752, 480)
    assert calib.camera.dist == (0.0, 0.0, 0.0, 0.0, 0.0)
    assert calib.fps == 30.0 and calib.bf is None and calib.depth_factor is None
    assert calib.th_depth == 40.0 and calib.rgb_order


def test_fps_zero_means_30_and_rgb_flag(tmp_path: Path) -> None:
    text = BASE + "Camera.width: 640\nCamera.height: 480\nCamera.fps: 0\nCamera.RGB: 0\n"
    calib = load_calibration(_write(tmp_path, text))
    assert calib.fps == 30.0 and not calib.rgb_order


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        (BASE.replace("Camera.fx: 500.0\n", ""), "missing required key Camera.fx"),
        (BASE.replace("500.0", '"abc"'), "Camera.fx must be a number"),
        (BASE.replace("500.0", "-500.0"), "Camera.fx must be positive"),
        (BASE.replace("501.0", "0.0"), "Camera.fy must be positive"),
        (BASE, "missing Camera.width/Camera.height"),
        (BASE + "Camera.width: 640\nCamera.height: 480\nCamera.k1: 0.1\n", "missing key Camera.k2"),
        (BASE + "Camera.width: 640\nCamera.height: 0\n", "invalid image size"),
        (BASE + "Camera.width: 640\nCamera.height: 480\nDepthMapFactor: -1\n", "DepthMapFactor"),
        (BASE + "Camera.width: 640\nCamera.height: 480\nCamera.fps: -5\n", "frame rate"),
    ],
)
def test_invalid_settings_name_file_and_key(tmp_path: Path, text: str, pattern: str) -> None:
    with pytest.raises(CalibrationError, match=pattern) as info:
        load_calibration(_write(tmp_path, text))
    assert "settings.yaml" in str(info.value)


def test_size_mismatch_with_images(tmp_path: Path) -> None:
    text = BASE + "Camera.width: 640\nCamera.height: 480\n"
    with pytest.raises(CalibrationError, match="do not match"):
        load_calibration(_write(tmp_path, text), image_size=(1241, 376))


def test_kitti_calib_baseline(shared_datasets: Path) -> None:
    path = shared_datasets / "kitti" / "sequences" / "06" / "calib.txt"
    calib = load_kitti_calib(path, (1226, 370))
    cam = calib.camera
    assert (cam.fx, cam.fy, cam.cx, cam.cy) == (707.0912, 707.0912, 601.8873, 183.1104)
    assert calib.baseline_m == pytest.approx(0.537, abs=1e-3)
    assert calib.fps == 10.0 and calib.camera.dist == (0.0,) * 5
    # OpenCV's decomposition of P1 puts the right camera centre at (baseline, 0, 0)
    P1 = np.array(path.read_text().splitlines()[1].split()[1:], dtype=float).reshape(3, 4)
    centre_h = cv2.decomposeProjectionMatrix(P1)[2].ravel()
    assert calib.baseline_m is not None
    np.testing.assert_allclose(centre_h[:3] / centre_h[3], [calib.baseline_m, 0, 0], atol=1e-9)
    assert calib.stereo_bf == pytest.approx(379.8145)


def test_kitti_calib_with_offset_left_projection(tmp_path: Path) -> None:
    # P0 with its own offset (as for KITTI's colour cameras): baseline is the difference
    p0 = "700 0 600 70 0 700 180 0 0 0 1 0"
    p1 = "700 0 600 -280 0 700 180 0 0 0 1 0"
    path = tmp_path / "calib.txt"
    path.write_text(f"P0: {p0}\nP1: {p1}\n")
    assert load_kitti_calib(path, (1241, 376)).baseline_m == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("P0: 1 0 0 0 0 1 0 0 0 0 1 0\n", "missing key P1"),
        ("P0: 1 0 0 0 0 1 0 0 0 0 1 0\nP1: 1 0 0 x 0 1 0 0 0 0 1 0\n", "P1 is not numeric"),
        ("P0: 1 0 0 0 0 1 0 0 0 0 1\nP1: 1 0 0 0 0 1 0 0 0 0 1 0\n", "P0 must hold 12"),
        ("P0: 1 0 0 0 0 1 0 0 0 0 1 0\nP1: 1 0 0 1 0 1 0 0 0 0 1 0\n", "non-positive baseline"),
        ("garbage line\n", "expected 'NAME: numbers'"),
    ],
)
def test_kitti_calib_malformed(tmp_path: Path, text: str, pattern: str) -> None:
    path = tmp_path / "calib.txt"
    path.write_text(text)
    with pytest.raises(CalibrationError, match=pattern):
        load_kitti_calib(path, (100, 100))


def test_kitti_calib_missing(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="not found"):
        load_kitti_calib(tmp_path / "calib.txt", (100, 100))


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ("Camera.width: 640\nCamera.height: 480\nCamera.k1: 1.0e20\nCamera.k2: 0.0\n"
         "Camera.p1: 0.0\nCamera.p2: 0.0\n", "k1"),  # issue 12, finding 7
        ("Camera.width: 640\nCamera.height: 480\nCamera.fps: 1.0e9\n", "fps"),
        ("Camera.width: 640\nCamera.height: 480\nCamera.bf: 1.0e12\n", "bf"),
        ("Camera.width: 640\nCamera.height: 480\nDepthMapFactor: 1.0e300\n", "depth factor"),
        ("Camera.width: 100000\nCamera.height: 480\n", "width"),
    ],
)
def test_out_of_range_settings_name_file_and_field(
    tmp_path: Path, extra: str, field: str
) -> None:
    path = _write(tmp_path, BASE + extra)
    with pytest.raises(CalibrationError, match=rf"settings\.yaml: .*{field}"):
        load_calibration(path)


def test_absurd_focal_length_in_settings(tmp_path: Path) -> None:
    """Issue 12, finding 7: ``fx = 1e308`` was accepted."""
    path = _write(tmp_path, BASE.replace("500.0", "1.0e308") + "Camera.width: 640\n"
                  "Camera.height: 480\n")
    with pytest.raises(CalibrationError, match=r"settings\.yaml: fx = 1e\+308 is out of range"):
        load_calibration(path)


def test_out_of_range_kitti_calib_names_file(tmp_path: Path) -> None:
    path = tmp_path / "calib.txt"
    path.write_text("P0: 1e308 0 600 0 0 700 180 0 0 0 1 0\n"
                    "P1: 1e308 0 600 -1e308 0 700 180 0 0 0 1 0\n")
    with pytest.raises(CalibrationError, match=r"calib\.txt: P0/P1: fx"):
        load_kitti_calib(path, (1241, 376))

"""Tests of slam.camera.pinhole: projection round trips and agreement with OpenCV."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from slam.camera.pinhole import Calibration, PinholeCamera
from slam.errors import CalibrationError

# A TUM fr1-like camera (moderate radial-tangential distortion).
DIST = (0.262383, -0.953104, -0.005358, 0.002628, 1.163314)
CAM = PinholeCamera(517.3, 516.5, 318.6, 255.3, 640, 480, DIST)
CAM_IDEAL = PinholeCamera(517.3, 516.5, 318.6, 255.3, 640, 480)


def random_points(seed: int, n: int = 200) -> np.ndarray:
    """Camera points (n, 3) that land inside the image, depth 0.5 .. 6 m."""
    rng = np.random.default_rng(seed)
    uv = rng.uniform([40, 40], [600, 440], size=(n, 2))
    z = rng.uniform(0.5, 6.0, size=n)
    return CAM_IDEAL.unproject(uv, z)


def test_project_unproject_round_trip() -> None:
    xyz = random_points(0)
    uv = CAM.project(xyz)
    np.testing.assert_allclose(CAM.unproject(uv, xyz[:, 2]), xyz, atol=1e-12)
    b = CAM.bearings(uv)
    np.testing.assert_allclose(b, xyz[:, :2] / xyz[:, 2:], atol=1e-14)
    np.testing.assert_allclose(np.c_[uv, np.ones(len(uv))] @ CAM.K_inv.T, np.c_[b, np.ones(len(b))])


def test_project_matches_opencv_without_distortion() -> None:
    xyz = random_points(1)
    uv_cv, _ = cv2.projectPoints(xyz.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), CAM.K, None)
    np.testing.assert_allclose(CAM.project(xyz), uv_cv.reshape(-1, 2), atol=1e-9)
    np.testing.assert_allclose(CAM_IDEAL.project_distorted(xyz), CAM.project(xyz), atol=1e-9)


def test_project_distorted_matches_formula() -> None:
    xyz = random_points(2)
    x, y = xyz[:, 0] / xyz[:, 2], xyz[:, 1] / xyz[:, 2]
    k1, k2, p1, p2, k3 = DIST
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    expected = np.c_[CAM.fx * xd + CAM.cx, CAM.fy * yd + CAM.cy]
    np.testing.assert_allclose(CAM.project_distorted(xyz), expected, atol=1e-9)
    assert np.abs(CAM.project_distorted(xyz) - CAM.project(xyz)).max() > 1.0  # really distorted


def test_undistort_inverts_project_distorted() -> None:
    xyz = random_points(3)
    uv_raw = CAM.project_distorted(xyz)
    np.testing.assert_allclose(CAM.undistort_points(uv_raw), CAM.project(xyz), atol=1e-2)
    assert np.median(np.abs(CAM.undistort_points(uv_raw) - CAM.project(xyz))) < 1e-3
    # Without distortion it is the identity (and a copy).
    uv = CAM_IDEAL.project(xyz)
    out = CAM_IDEAL.undistort_points(uv)
    np.testing.assert_array_equal(out, uv)
    assert out is not uv
    assert CAM.undistort_points(np.zeros((0, 2))).shape == (0, 2)


def test_distort_points_inverts_undistort_points() -> None:
    xyz = random_points(3)
    uv_raw = CAM.project_distorted(xyz)
    np.testing.assert_allclose(CAM.distort_points(CAM.project(xyz)), uv_raw, atol=1e-9)
    # OpenCV's iterative undistortion, then ours back: the raw pixels again
    np.testing.assert_allclose(CAM.distort_points(CAM.undistort_points(uv_raw)), uv_raw,
                               atol=1e-2)
    uv = CAM_IDEAL.project(xyz)
    out = CAM_IDEAL.distort_points(uv)
    np.testing.assert_array_equal(out, uv)
    assert out is not uv
    assert CAM.distort_points(np.zeros((0, 2))).shape == (0, 2)


def test_in_image_margin() -> None:
    uv = np.array([[0.0, 0.0], [639.5, 479.5], [640.0, 10.0], [5.0, 5.0], [-0.1, 3.0]])
    np.testing.assert_array_equal(CAM.in_image(uv), [True, True, False, True, False])
    np.testing.assert_array_equal(CAM.in_image(uv, margin=10), [False, False, False, False, False])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"fx": -1.0},
        {"fy": float("nan")},
        {"width": 0},
        {"dist": (0.1, 0.2, 0.3)},
        {"dist": (0.1, float("inf"), 0, 0, 0)},
    ],
)
def test_invalid_intrinsics_raise(kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {
        "fx": 500.0, "fy": 500.0, "cx": 320.0, "cy": 240.0, "width": 640, "height": 480
    }  # fmt: skip
    base.update(kwargs)
    with pytest.raises(CalibrationError):
        PinholeCamera(**base)  # type: ignore[arg-type]


def test_calibration_stereo_depth_threshold() -> None:
    calib = Calibration(CAM_IDEAL, baseline_m=0.12, th_depth=35.0)
    assert calib.stereo_bf == pytest.approx(0.12 * 517.3)
    assert calib.max_close_depth_m == pytest.approx(35.0 * 0.12)
    assert Calibration(CAM_IDEAL).max_close_depth_m is None
    with pytest.raises(CalibrationError):
        Calibration(CAM_IDEAL, fps=0.0)

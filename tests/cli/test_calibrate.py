"""``slam calibrate`` on chessboard views rendered through a known camera and distortion."""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import pytest

from slam.cli import calibrate
from slam.errors import CalibrationError, ConfigError
from slam.io.calibration import load_calibration
from slam.io.settings import read_opencv_yaml
from slam.io.types import SensorFrame

W, H = 640, 480
K_TRUE = np.array([[500.0, 0.0, 322.0], [0.0, 505.0, 236.0], [0.0, 0.0, 1.0]])
DIST_TRUE = np.array([-0.18, 0.06, 0.0012, -0.0008, 0.0])
BOARD = calibrate.Board(9, 6, 0.025)
PPS = 48  # texture pixels per square


def board_texture() -> np.ndarray:
    """(rows+3)x(cols+3) squares: a white margin of one square around the chessboard."""
    n_x, n_y = BOARD.cols + 3, BOARD.rows + 3
    tex = np.full((n_y * PPS, n_x * PPS), 255, np.uint8)
    for j in range(1, n_y - 1):
        for i in range(1, n_x - 1):
            if (i + j) % 2 == 0:
                tex[j * PPS : (j + 1) * PPS, i * PPS : (i + 1) * PPS] = 0
    return tex


@pytest.fixture(scope="module")
def undistorted_grid() -> np.ndarray:
    """(H*W, 2) normalised undistorted coordinates of every pixel of the distorted image."""
    us, vs = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    uv = np.stack([us.ravel(), vs.ravel()], axis=1).reshape(-1, 1, 2)
    criteria = (cv2.TERM_CRITERIA_COUNT + cv2.TERM_CRITERIA_EPS, 100, 1e-12)
    xy = cv2.undistortPoints(uv, K_TRUE, DIST_TRUE, criteria=criteria)
    return xy.reshape(-1, 2)


def render(grid: np.ndarray, rvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    """Grey (H, W) image of the board at pose (rvec, tvec) seen through K_TRUE, DIST_TRUE."""
    R, _ = cv2.Rodrigues(rvec)
    Hn = np.column_stack([R[:, 0], R[:, 1], tvec])  # board (x, y, 1) -> normalised image
    xy1 = np.column_stack([grid, np.ones(len(grid))]) @ np.linalg.inv(Hn).T
    bxy = xy1[:, :2] / xy1[:, 2:3]  # metres on the board plane, first inner corner at 0
    tex_uv = (bxy / BOARD.square_m + 2.0) * PPS - 0.5
    map_x = tex_uv[:, 0].reshape(H, W).astype(np.float32)
    map_y = tex_uv[:, 1].reshape(H, W).astype(np.float32)
    img = cv2.remap(board_texture(), map_x, map_y, cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_CONSTANT, borderValue=150)
    return cv2.GaussianBlur(img, (0, 0), 0.6)


def view_poses(n: int, seed: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    """Board poses (rvec, tvec) whose corners all project inside the image with a margin."""
    rng = np.random.default_rng(seed)
    centre = np.array([(BOARD.cols - 1) / 2, (BOARD.rows - 1) / 2, 0.0]) * BOARD.square_m
    poses: list[tuple[np.ndarray, np.ndarray]] = []
    while len(poses) < n:
        rvec = np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.6), rng.uniform(-0.5, 0.5)])
        R, _ = cv2.Rodrigues(rvec)
        z = rng.uniform(0.32, 0.5)
        c = np.array([rng.uniform(-0.35, 0.35) * z, rng.uniform(-0.25, 0.25) * z, z])
        tvec = c - R @ centre
        uv = project(rvec, tvec)
        if (uv.min(axis=0) > 30).all() and (uv.max(axis=0) < [W - 30, H - 30]).all():
            poses.append((rvec, tvec))
    return poses


def project(rvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    uv, _ = cv2.projectPoints(BOARD.object_points().astype(np.float64), rvec, tvec,
                              K_TRUE, DIST_TRUE)
    return uv.reshape(-1, 2)


def run_calibrate(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="slam")
    calibrate.register(parser.add_subparsers(dest="command", required=True), [])
    args = parser.parse_args(["calibrate", *argv])
    return int(args.func(args))


@pytest.fixture(scope="module")
def views_dir(tmp_path_factory: pytest.TempPathFactory, undistorted_grid: np.ndarray) -> Path:
    folder = tmp_path_factory.mktemp("views")
    for i, (rvec, tvec) in enumerate(view_poses(16)):
        cv2.imwrite(str(folder / f"view_{i:02d}.png"), render(undistorted_grid, rvec, tvec))
    return folder


def test_corners_match_projected_ground_truth(undistorted_grid: np.ndarray) -> None:
    for rvec, tvec in view_poses(3, seed=11):
        uv = calibrate.detect_corners(render(undistorted_grid, rvec, tvec), BOARD)
        assert uv is not None
        err = np.linalg.norm(uv - project(rvec, tvec), axis=1)
        assert err.max() < 0.15, err.max()


def test_recovers_intrinsics_and_writes_readable_settings(
    views_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sub" / "settings.yaml"
    argv = ["--source", f"images:{views_dir}", "--board", "9x6", "--square", "0.025",
            "--out", str(out), "--min-views", "15", "--fps", "25"]
    assert run_calibrate(argv) == 0
    assert "reprojection RMS" in capsys.readouterr().out
    assert out.read_text().startswith("%YAML:1.0\n")
    calib = load_calibration(out)
    cam = calib.camera
    for got, want in ((cam.fx, 500.0), (cam.fy, 505.0), (cam.cx, 322.0), (cam.cy, 236.0)):
        assert abs(got - want) < 0.01 * want, (got, want)
    assert (cam.width, cam.height) == (W, H)
    assert calib.fps == pytest.approx(25.0)
    assert np.asarray(cam.dist)[:2] == pytest.approx(DIST_TRUE[:2], abs=0.03)
    rms = float(out.read_text().split("RMS ")[1].split()[0])
    assert rms < 0.5
    values = read_opencv_yaml(out)
    assert values["Camera.k1"] == pytest.approx(float(np.asarray(cam.dist)[0]), abs=1e-8)


def test_calibrate_matches_opencv_on_exact_corners() -> None:
    views = [project(r, t).astype(np.float32) for r, t in view_poses(12, seed=5)]
    result = calibrate.calibrate(views, BOARD, (W, H))
    assert result.rms_px < 1e-3
    np.testing.assert_allclose(result.K, K_TRUE, atol=1e-3)
    np.testing.assert_allclose(result.dist, DIST_TRUE, atol=1e-4)


def test_too_few_views_is_a_calibration_error(views_dir: Path, tmp_path: Path) -> None:
    argv = ["--source", f"images:{views_dir}", "--out", str(tmp_path / "s.yaml"),
            "--min-views", "30", "--max-views", "40"]
    with pytest.raises(CalibrationError, match="16 distinct views, need 30"):
        run_calibrate(argv)
    assert not (tmp_path / "s.yaml").exists()


def test_duplicate_views_are_kept_once(undistorted_grid: np.ndarray) -> None:
    rvec, tvec = view_poses(1, seed=2)[0]
    img = render(undistorted_grid, rvec, tvec)
    blank = np.full_like(img, 128)
    frames = [SensorFrame(i, i / 30, im) for i, im in enumerate([img, img, blank, img])]
    views, size = calibrate.collect_views(frames, BOARD, max_views=10)
    assert len(views) == 1 and size == (W, H)


@pytest.mark.parametrize(
    ("board", "square"), [("9", 0.025), ("9x", 0.025), ("axb", 0.025), ("2x6", 0.025),
                          ("6x6", 0.025), ("9x6", 0.0), ("9x6", -1.0)]
)
def test_bad_board_options(board: str, square: float) -> None:
    with pytest.raises(ConfigError):
        calibrate.parse_board(board, square)


def test_other_sources_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="calibrate reads"):
        run_calibrate(["--source", "tum:/nowhere", "--out", str(tmp_path / "s.yaml")])


def test_board_object_points_are_row_major_metres() -> None:
    xyz = calibrate.Board(4, 3, 0.5).object_points()
    assert xyz.shape == (12, 3) and xyz.dtype == np.float32
    np.testing.assert_array_equal(xyz[1], [0.5, 0.0, 0.0])
    np.testing.assert_array_equal(xyz[4], [0.0, 0.5, 0.0])
    np.testing.assert_array_equal(xyz[-1], [1.5, 1.0, 0.0])

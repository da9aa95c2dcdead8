"""Video files, image folders and webcams (mono only)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from slam.errors import CalibrationError, DataSourceError, ImageError, SensorError
from slam.io.sources import ImageFolderSource, VideoSource, open_source

SETTINGS = "%YAML:1.0\nCamera.fx: 60.\nCamera.fy: 60.\nCamera.cx: 32.\nCamera.cy: 24.\n"


def _pattern(i: int) -> np.ndarray:
    """A 48x64 BGR frame whose content identifies ``i`` (smooth, so MJPEG keeps it)."""
    u, v = np.meshgrid(np.arange(64), np.arange(48))
    img = np.stack([(u * 4 + i * 20) % 256, v * 5, np.full_like(u, i * 25)], axis=-1)
    return img.astype(np.uint8)


@pytest.fixture
def video(tmp_path: Path) -> Path:
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 5.0, (64, 48))
    assert writer.isOpened()
    for i in range(10):
        writer.write(_pattern(i))
    writer.release()
    return path


def test_video_frames_and_stamps(video: Path) -> None:
    source = open_source(f"video:{video}", "mono")
    assert isinstance(source, VideoSource) and source.calibration is None
    assert len(source) == 10
    frames = list(source)
    assert [f.index for f in frames] == list(range(10))
    assert [f.timestamp for f in frames] == pytest.approx([i / 5.0 for i in range(10)])
    for i, frame in enumerate(frames):
        assert frame.image.dtype == np.uint8 and frame.image.shape == (48, 64)
        assert frame.color is not None
        error = np.abs(frame.color.astype(int) - _pattern(i).astype(int)).mean()
        assert error < 4.0, f"frame {i} differs from what was written ({error:.1f})"
        expected_grey = cv2.cvtColor(frame.color, cv2.COLOR_BGR2GRAY)
        np.testing.assert_array_equal(frame.image, expected_grey)


def test_video_fps_override_and_calibration(video: Path, tmp_path: Path) -> None:
    calib = tmp_path / "c.yaml"
    calib.write_text(SETTINGS + "Camera.fps: 25.\n")
    source = open_source(f"video:{video}", "mono", calib_path=calib)
    assert source.calibration is not None and source.calibration.camera.width == 64
    assert [f.timestamp for f in source][1] == pytest.approx(1 / 25.0)
    source = open_source(f"video:{video}", "mono", calib_path=calib, fps=2.0)
    assert [f.timestamp for f in source][3] == pytest.approx(1.5)


def test_video_calibration_of_another_size(video: Path, tmp_path: Path) -> None:
    calib = tmp_path / "c.yaml"
    calib.write_text(SETTINGS + "Camera.width: 640\nCamera.height: 480\n")
    with pytest.raises(CalibrationError, match="do not match"):
        open_source(f"video:{video}", "mono", calib_path=calib)


def test_video_errors(video: Path, tmp_path: Path) -> None:
    with pytest.raises(SensorError, match="stereo"):
        open_source(f"video:{video}", "stereo")
    with pytest.raises(DataSourceError, match="not found"):
        open_source(f"video:{tmp_path / 'none.mp4'}", "mono")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 100)
    with pytest.raises(DataSourceError, match=r"junk.mp4"):
        open_source(f"video:{junk}", "mono")


def _image_folder(tmp_path: Path, n: int = 3) -> Path:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:04d}.png"), _pattern(i))
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_image_folder_order_pixels_and_stamps(tmp_path: Path) -> None:
    folder = _image_folder(tmp_path)
    calib = tmp_path / "c.yaml"
    calib.write_text(SETTINGS + "Camera.fps: 20.\n")
    source = open_source(f"images:{folder}", "mono", calib_path=calib)
    assert isinstance(source, ImageFolderSource) and len(source) == 3
    frames = list(source)
    assert [f.timestamp for f in frames] == [0.0, 0.05, 0.1]
    for i, frame in enumerate(frames):
        np.testing.assert_array_equal(frame.color, _pattern(i))
        np.testing.assert_array_equal(frame.image, cv2.cvtColor(_pattern(i), cv2.COLOR_BGR2GRAY))
    assert source.ground_truth() is None
    no_calib = open_source(f"images:{folder}", "mono", fps=10.0)
    assert no_calib.calibration is None and [f.timestamp for f in no_calib][2] == 0.2


def test_image_folder_bad_images(tmp_path: Path) -> None:
    folder = _image_folder(tmp_path)
    cv2.imwrite(str(folder / "0001.png"), np.zeros((10, 10, 3), np.uint8))
    (folder / "0002.png").write_bytes(b"garbage")
    frames = iter(open_source(f"images:{folder}", "mono"))
    next(frames)
    with pytest.raises(ImageError, match=r"0001.png is 10x10, expected 64x48"):
        next(frames)
    cv2.imwrite(str(folder / "0001.png"), _pattern(1))
    frames = iter(open_source(f"images:{folder}", "mono"))
    next(frames)
    next(frames)
    with pytest.raises(ImageError, match=r"0002.png"):
        next(frames)


def test_empty_image_folder(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match="no image files"):
        open_source(f"images:{tmp_path}", "mono")


def test_absent_webcam_is_a_clear_error() -> None:
    with pytest.raises(DataSourceError, match="cannot open webcam 97"):
        open_source("webcam:97", "mono")
    with pytest.raises(DataSourceError, match="device number"):
        open_source("webcam:front", "mono")

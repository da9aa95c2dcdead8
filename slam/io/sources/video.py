"""Monocular sources without ground truth: a video file, a folder of images, a webcam.

Calibration comes from ``calib_path`` (an ORB-SLAM settings file; its size is taken
from the first frame when it has none); without one ``calibration`` is None and the
caller must supply a camera. Frame times: ``fps`` argument, else the calibration's
``Camera.fps``, else the video's own rate, else 30 Hz; webcams use the wall clock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from slam.camera.pinhole import Calibration
from slam.errors import DataSourceError, ImageError
from slam.io.calibration import load_calibration
from slam.io.sources.base import FrameSource, image_size_of, read_color, require_dir, require_file
from slam.io.types import SensorFrame

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".tif", ".tiff"})
DEFAULT_FPS = 30.0


def _calibration(calib_path: str | Path | None, size: tuple[int, int]) -> Calibration | None:
    if calib_path is None:
        log.warning("no calibration given (--calib); the source yields uncalibrated frames")
        return None
    return load_calibration(calib_path, image_size=size)


def _frame_rate(fps: float | None, calib: Calibration | None, native: float = 0.0) -> float:
    if fps is not None:
        if not fps > 0:
            raise DataSourceError(f"frame rate must be positive, got {fps}")
        return float(fps)
    if calib is not None:
        return calib.fps
    return native if native > 0 else DEFAULT_FPS


def _to_grey(bgr: np.ndarray) -> NDArray[np.uint8]:
    grey = bgr if bgr.ndim == 2 else cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    return np.asarray(grey, dtype=np.uint8)


class _CaptureSource(FrameSource):
    """Shared reading loop of video files and webcams."""

    sensors = frozenset({"mono"})
    _size: tuple[int, int]

    def _open(self) -> cv2.VideoCapture:
        raise NotImplementedError

    def _stamp(self, index: int, t_start: float) -> float:
        raise NotImplementedError

    def __iter__(self) -> Iterator[SensorFrame]:
        cap = self._open()
        t_start = time.monotonic()
        try:
            index = 0
            while True:
                ok, bgr = cap.read()
                if not ok or bgr is None:
                    return
                if (bgr.shape[1], bgr.shape[0]) != self._size:
                    raise ImageError(
                        f"{self.name}: frame {index} is {bgr.shape[1]}x{bgr.shape[0]}, "
                        f"expected {self._size[0]}x{self._size[1]}"
                    )
                color = np.asarray(bgr, dtype=np.uint8) if bgr.ndim == 3 else None
                yield SensorFrame(index, self._stamp(index, t_start), _to_grey(bgr), color=color)
                index += 1
        finally:
            cap.release()


class VideoSource(_CaptureSource):
    """Frames of a video file decoded by OpenCV; stamps are ``index / fps``."""

    def __init__(
        self,
        path: str | Path,
        sensor: str,
        calib_path: str | Path | None = None,
        fps: float | None = None,
    ):
        self.path = require_file(Path(path), "video file")
        self.name = f"video:{self.path.name}"
        self._check_sensor(sensor)
        cap = self._open()
        try:
            native_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            ok, first = cap.read()
        finally:
            cap.release()
        if not ok or first is None:
            raise ImageError(f"cannot decode any frame of {self.path}")
        self._size = (first.shape[1], first.shape[0])
        self._count = count if count > 0 else None
        self.calibration = _calibration(calib_path, self._size)
        self.fps = _frame_rate(fps, self.calibration, native_fps)

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise DataSourceError(f"OpenCV cannot open video {self.path}")
        return cap

    def _stamp(self, index: int, t_start: float) -> float:
        return index / self.fps

    @property
    def length(self) -> int | None:
        """Frame count the container reports (may be approximate for some codecs)."""
        return self._count


class WebcamSource(_CaptureSource):
    """A live camera ``cv2.VideoCapture(index)``; stamps are seconds since iteration began."""

    def __init__(self, index: int, sensor: str, calib_path: str | Path | None = None):
        self.index = index
        self.name = f"webcam:{index}"
        self._check_sensor(sensor)
        cap = self._open()
        try:
            ok, first = cap.read()
        finally:
            cap.release()
        if not ok or first is None:
            raise DataSourceError(f"webcam {index} opened but delivered no frame")
        self._size = (first.shape[1], first.shape[0])
        self.calibration = _calibration(calib_path, self._size)

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(self.index)
        if not cap.isOpened():
            cap.release()
            raise DataSourceError(f"cannot open webcam {self.index} (no such device?)")
        return cap

    def _stamp(self, index: int, t_start: float) -> float:
        return time.monotonic() - t_start


class ImageFolderSource(FrameSource):
    """Image files of a folder in name order; stamps are ``index / fps``."""

    sensors = frozenset({"mono"})

    def __init__(
        self,
        folder: str | Path,
        sensor: str,
        calib_path: str | Path | None = None,
        fps: float | None = None,
    ):
        self.folder = require_dir(Path(folder), "image")
        self.name = f"images:{self.folder.name}"
        self._check_sensor(sensor)
        self._files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self._files:
            raise DataSourceError(f"{self.folder} holds no image files")
        self._size = image_size_of(self._files[0])
        self.calibration = _calibration(calib_path, self._size)
        self.fps = _frame_rate(fps, self.calibration)

    @property
    def length(self) -> int:
        return len(self._files)

    def __iter__(self) -> Iterator[SensorFrame]:
        for index, path in enumerate(self._files):
            grey, bgr = read_color(path, self._size)
            yield SensorFrame(index, index / self.fps, grey, color=bgr)

"""KITTI odometry sequences: ``DIR/sequences/NN`` with ``image_0``, ``image_1``, ``calib.txt``,
``times.txt``; ground truth in ``DIR/poses/NN.txt`` (world-from-left-camera, 3x4 rows)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from slam.camera.pinhole import Calibration
from slam.errors import CalibrationError, DataSourceError, EvaluationError
from slam.io.calibration import load_calibration, load_kitti_calib
from slam.io.sources.base import (
    FrameSource,
    image_size_of,
    read_grey,
    require_dir,
    require_file,
)
from slam.io.trajectory_io import read_kitti_poses
from slam.io.types import SensorFrame, Trajectory

log = logging.getLogger(__name__)

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".pgm", ".ppm", ".bmp", ".tif", ".tiff"}


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)


def _read_times(path: Path) -> np.ndarray:
    try:
        times = np.loadtxt(path, dtype=np.float64, ndmin=1)
    except ValueError as exc:
        raise DataSourceError(f"{path}: malformed timestamps ({exc})") from exc
    return times.reshape(-1)


class KittiSource(FrameSource):
    """A KITTI odometry sequence folder, as mono (``image_0``) or stereo (+ ``image_1``)."""

    sensors = frozenset({"mono", "stereo"})

    def __init__(self, folder: str | Path, sensor: str, calib_path: str | Path | None = None):
        self.folder = require_dir(Path(folder), "KITTI sequence")
        self.name = f"kitti:{self.folder.name}"
        self._check_sensor(sensor)
        self._left = _images(require_dir(self.folder / "image_0", "KITTI image_0"))
        if not self._left:
            raise DataSourceError(f"{self.folder / 'image_0'} holds no images")
        self._right: list[Path] = []
        if sensor == "stereo":
            right_dir = require_dir(self.folder / "image_1", "KITTI image_1")
            self._right = [right_dir / p.name for p in self._left]
            missing = [p for p in self._right if not p.is_file()]
            if missing:
                raise DataSourceError(f"right image missing: {missing[0]}")
        times = _read_times(require_file(self.folder / "times.txt", "KITTI times.txt"))
        if len(times) < len(self._left):
            raise DataSourceError(
                f"{self.folder}: {len(self._left)} images but only {len(times)} timestamps"
            )
        self._all_times = times
        self._times = times[: len(self._left)]
        self.calibration = self._load_calibration(calib_path)

    def _load_calibration(self, calib_path: str | Path | None) -> Calibration:
        size = image_size_of(self._left[0])
        if calib_path is None:
            return load_kitti_calib(self.folder / "calib.txt", size)
        calib = load_calibration(calib_path, image_size=size)
        if self.sensor == "stereo" and calib.baseline_m is None:
            if calib.bf is None:
                raise CalibrationError(f"{calib_path}: stereo needs Camera.bf")
            calib = dataclasses.replace(calib, baseline_m=calib.bf / calib.camera.fx)
        return calib

    @property
    def length(self) -> int:
        return len(self._left)

    def __iter__(self) -> Iterator[SensorFrame]:
        assert self.calibration is not None
        size = (self.calibration.camera.width, self.calibration.camera.height)
        for index, left in enumerate(self._left):
            right = read_grey(self._right[index], size) if self._right else None
            yield SensorFrame(
                index=index,
                timestamp=float(self._times[index]),
                image=read_grey(left, size),
                right=right,
            )

    def ground_truth(self) -> Trajectory | None:
        path = self.folder.parent.parent / "poses" / f"{self.folder.name}.txt"
        if not path.is_file():
            return None
        n_rows = sum(1 for line in path.read_text().splitlines() if line.strip())
        if n_rows > len(self._all_times):
            raise EvaluationError(f"{path}: {n_rows} poses but {len(self._all_times)} timestamps")
        return read_kitti_poses(path, stamps=self._all_times[:n_rows])

"""TUM RGB-D benchmark sequences (``rgb.txt``, ``depth.txt``, ``groundtruth.txt``).

RGB-D frames pair each colour image with the depth image nearest in time,
within 20 ms, each image used once, closest pairs first (the rule of the
benchmark's ``associate.py``). Depth is metres = raw / ``DepthMapFactor`` (5000).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from slam.camera.pinhole import Calibration
from slam.errors import CalibrationError, DataSourceError
from slam.io.calibration import TUM_DEPTH_FACTOR, load_calibration, tum_calibration_for
from slam.io.sources.base import (
    FrameSource,
    image_size_of,
    read_color,
    read_depth,
    require_dir,
    require_file,
)
from slam.io.trajectory_io import read_tum_trajectory
from slam.io.types import SensorFrame, Trajectory

log = logging.getLogger(__name__)

MAX_ASSOCIATION_DIFF_S = 0.02


def read_file_list(path: Path) -> tuple[NDArray[np.float64], list[str]]:
    """Stamps (N,) seconds and relative file names of a TUM ``timestamp filename`` list."""
    stamps: list[float] = []
    names: list[str] = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.replace(",", " ").split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) < 2:
            raise DataSourceError(f"{path}:{lineno}: expected 'timestamp filename'")
        try:
            stamps.append(float(fields[0]))
        except ValueError as exc:
            raise DataSourceError(f"{path}:{lineno}: bad timestamp {fields[0]!r}") from exc
        names.append(fields[1])
    return np.asarray(stamps, dtype=np.float64), names


def associate(
    first: NDArray[np.float64],
    second: NDArray[np.float64],
    max_diff: float = MAX_ASSOCIATION_DIFF_S,
) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)`` with ``|first[i] - second[j]| < max_diff``, sorted by ``i``.

    Closest candidate pairs are taken first and every index is used at most once.
    """
    order = np.argsort(second)
    sorted_second = second[order]
    candidates: list[tuple[float, int, int]] = []
    for i, t in enumerate(first):
        lo = np.searchsorted(sorted_second, t - max_diff, side="left")
        hi = np.searchsorted(sorted_second, t + max_diff, side="right")
        for k in range(lo, hi):
            diff = abs(t - sorted_second[k])
            if diff < max_diff:
                candidates.append((diff, i, int(order[k])))
    candidates.sort()
    used_i: set[int] = set()
    used_j: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for _, i, j in candidates:
        if i not in used_i and j not in used_j:
            used_i.add(i)
            used_j.add(j)
            pairs.append((i, j))
    return sorted(pairs)


class TumSource(FrameSource):
    """A TUM RGB-D sequence folder, as mono (colour only) or RGB-D."""

    sensors = frozenset({"mono", "rgbd"})

    def __init__(self, folder: str | Path, sensor: str, calib_path: str | Path | None = None):
        self.folder = require_dir(Path(folder), "TUM sequence")
        self.name = f"tum:{self.folder.name}"
        self._check_sensor(sensor)
        rgb_list = require_file(self.folder / "rgb.txt", "TUM rgb.txt")
        self._rgb_stamps, self._rgb_names = read_file_list(rgb_list)
        if len(self._rgb_names) == 0:
            raise DataSourceError(f"{rgb_list} lists no images")
        self._pairs: list[tuple[int, int]] = [(i, -1) for i in range(len(self._rgb_names))]
        self._depth_names: list[str] = []
        if sensor == "rgbd":
            depth_list = require_file(self.folder / "depth.txt", "TUM depth.txt")
            depth_stamps, self._depth_names = read_file_list(depth_list)
            self._pairs = associate(self._rgb_stamps, depth_stamps)
            if not self._pairs:
                raise DataSourceError(f"{self.folder}: no colour/depth pairs within 20 ms")
            log.info("%s: %d rgb-depth pairs", self.name, len(self._pairs))
        self.calibration = self._load_calibration(calib_path)

    def _load_calibration(self, calib_path: str | Path | None) -> Calibration:
        if calib_path is not None:
            first = self.folder / self._rgb_names[0]
            calib = load_calibration(calib_path, image_size=image_size_of(first))
        else:
            found = tum_calibration_for(self.folder.name)
            if found is None:
                raise CalibrationError(
                    f"{self.folder}: cannot infer the camera from the name (no freiburg1/2/3); "
                    "pass a settings file with --calib"
                )
            calib = found
        if self.sensor == "rgbd" and calib.depth_factor is None:
            log.info("%s: no DepthMapFactor, using TUM's %g", self.name, TUM_DEPTH_FACTOR)
            calib = dataclasses.replace(calib, depth_factor=TUM_DEPTH_FACTOR)
        return calib

    @property
    def length(self) -> int:
        return len(self._pairs)

    def __iter__(self) -> Iterator[SensorFrame]:
        assert self.calibration is not None
        cam = self.calibration.camera
        size = (cam.width, cam.height)
        factor = self.calibration.depth_factor or TUM_DEPTH_FACTOR
        for index, (i, j) in enumerate(self._pairs):
            grey, bgr = read_color(self.folder / self._rgb_names[i], size)
            depth = None
            if j >= 0:
                depth = read_depth(self.folder / self._depth_names[j], factor, size)
            yield SensorFrame(
                index=index,
                timestamp=float(self._rgb_stamps[i]),
                image=grey,
                depth_m=depth,
                color=bgr,
            )

    def ground_truth(self) -> Trajectory | None:
        path = self.folder / "groundtruth.txt"
        return read_tum_trajectory(path) if path.is_file() else None

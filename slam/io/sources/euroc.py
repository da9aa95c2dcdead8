"""EuRoC MAV sequences in the ASL layout (``DIR/mav0/cam0`` or ``DIR/cam0``).

Each camera folder has ``data.csv`` (``#timestamp [ns],filename``), ``data/`` and
``sensor.yaml`` (``T_BS`` body-from-sensor 4x4, ``intrinsics [fu, fv, cu, cv]``,
radial-tangential ``distortion_coefficients``, ``resolution [w, h]``, ``rate_hz``).

- mono: raw ``cam0`` images with the distorted calibration; ground truth is the
  ``cam0`` pose ``T_world_body @ T_BS``.
- stereo: both images rectified (``cv2.stereoRectify``, zero disparity at infinity,
  alpha 0); the calibration is the rectified left camera with ``baseline_m``; the
  ground truth is the rectified left camera ``T_world_body @ T_BS0 @ R1^T``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml
from numpy.typing import NDArray

from slam.camera.limits import check_distortion, check_fps, check_intrinsics
from slam.camera.pinhole import Calibration, PinholeCamera
from slam.errors import CalibrationError, DataSourceError
from slam.geometry.conventions import pose_from_t_q_xyzw, q_wxyz_to_xyzw
from slam.geometry.lie import se3_inv
from slam.io.calibration import load_calibration
from slam.io.sources.base import FrameSource, read_grey, require_dir, require_file
from slam.io.types import SensorFrame, Trajectory

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EurocCamera:
    """One ``sensor.yaml``: intrinsics, distortion (4,), size (w, h), ``T_BS`` (4x4), rate."""

    K: NDArray[np.float64]
    dist: NDArray[np.float64]
    size: tuple[int, int]
    T_body_cam: NDArray[np.float64]
    rate_hz: float


def _floats(doc: dict[str, Any], key: str, n: int, path: Path) -> NDArray[np.float64]:
    raw = doc.get(key)
    if isinstance(raw, dict):
        raw = raw.get("data")
    try:
        arr = np.asarray(raw, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise CalibrationError(f"{path}: {key} must be numbers") from exc
    if arr.size != n or not np.all(np.isfinite(arr)):
        raise CalibrationError(f"{path}: {key} must hold {n} finite numbers")
    return arr


def read_sensor_yaml(path: Path) -> EurocCamera:
    """Parse an ASL camera ``sensor.yaml`` (a leading ``%YAML:1.0`` line is allowed)."""
    if not path.is_file():
        raise CalibrationError(f"EuRoC sensor.yaml not found: {path}")
    lines = path.read_text().splitlines()
    body = "\n".join(ln for ln in lines if not ln.lstrip().startswith("%YAML"))
    try:
        doc = yaml.safe_load(body)
    except yaml.YAMLError as exc:
        raise CalibrationError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(doc, dict):
        raise CalibrationError(f"{path}: expected a mapping")
    if doc.get("distortion_model", "radial-tangential") != "radial-tangential":
        raise CalibrationError(f"{path}: only radial-tangential distortion is supported")
    fu, fv, cu, cv = _floats(doc, "intrinsics", 4, path)
    if fu <= 0 or fv <= 0:
        raise CalibrationError(f"{path}: intrinsics must have positive focal lengths")
    w, h = _floats(doc, "resolution", 2, path)
    dist = _floats(doc, "distortion_coefficients", 4, path)
    rate_hz = float(doc.get("rate_hz", 20.0))
    try:  # the ranges of slam.camera.limits, named in this file's terms
        check_intrinsics(fu, fv, cu, cv, w, h)
        check_distortion(dist.tolist())
        check_fps(rate_hz)
    except CalibrationError as exc:
        raise CalibrationError(f"{path}: {exc}") from exc
    K = np.array([[fu, 0.0, cu], [0.0, fv, cv], [0.0, 0.0, 1.0]])
    return EurocCamera(
        K=K,
        dist=dist,
        size=(int(w), int(h)),
        T_body_cam=_floats(doc, "T_BS", 16, path).reshape(4, 4),
        rate_hz=rate_hz,
    )


def _read_image_list(cam_dir: Path) -> dict[int, Path]:
    """Stamp (ns) -> image path of a camera folder's ``data.csv``."""
    csv = require_file(cam_dir / "data.csv", "EuRoC data.csv")
    out: dict[int, Path] = {}
    for lineno, line in enumerate(csv.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = [f.strip() for f in line.split(",")]
        try:
            out[int(fields[0])] = cam_dir / "data" / fields[1]
        except (ValueError, IndexError) as exc:
            raise DataSourceError(f"{csv}:{lineno}: expected 'timestamp_ns,filename'") from exc
    if not out:
        raise DataSourceError(f"{csv} lists no images")
    return out


class EurocSource(FrameSource):
    """A EuRoC MAV sequence, as mono (``cam0``) or rectified stereo (``cam0`` + ``cam1``)."""

    sensors = frozenset({"mono", "stereo"})

    def __init__(self, folder: str | Path, sensor: str, calib_path: str | Path | None = None):
        root = require_dir(Path(folder), "EuRoC sequence")
        self.name = f"euroc:{root.name}"
        self._check_sensor(sensor)
        self.mav = root / "mav0" if (root / "mav0").is_dir() else root
        self._cam0 = read_sensor_yaml(require_dir(self.mav / "cam0", "EuRoC cam0") / "sensor.yaml")
        left = _read_image_list(self.mav / "cam0")
        self._R_rect_cam0: NDArray[np.float64] = np.eye(3)
        self._pairs: list[tuple[int, Path, Path | None]] = []
        self._maps: tuple[Any, Any] | None = None
        if sensor == "stereo":
            cam1 = read_sensor_yaml(require_dir(self.mav / "cam1", "EuRoC cam1") / "sensor.yaml")
            right = _read_image_list(self.mav / "cam1")
            stamps = sorted(set(left) & set(right))
            if len(stamps) < len(left):
                log.warning(
                    "%s: %d left images without a right one", self.name, len(left) - len(stamps)
                )
            self._pairs = [(t, left[t], right[t]) for t in stamps]
            self.calibration = self._rectify(cam1)
            if calib_path is not None:
                log.warning(
                    "%s: stereo rectification comes from sensor.yaml; ignoring %s",
                    self.name,
                    calib_path,
                )
        else:
            self._pairs = [(t, left[t], None) for t in sorted(left)]
            self.calibration = self._mono_calibration(calib_path)
        if not self._pairs:
            raise DataSourceError(f"{root}: no synchronised stereo pairs")

    def _mono_calibration(self, calib_path: str | Path | None) -> Calibration:
        if calib_path is not None:
            return load_calibration(calib_path, image_size=self._cam0.size)
        K, (w, h) = self._cam0.K, self._cam0.size
        dist = (*self._cam0.dist.tolist(), 0.0)
        camera = PinholeCamera(K[0, 0], K[1, 1], K[0, 2], K[1, 2], w, h, dist)
        return Calibration(camera=camera, fps=self._cam0.rate_hz)

    def _rectify(self, cam1: EurocCamera) -> Calibration:
        cam0 = self._cam0
        if cam1.size != cam0.size:
            raise CalibrationError(f"{self.name}: cam0 and cam1 have different resolutions")
        T_cam1_cam0 = se3_inv(cam1.T_body_cam) @ cam0.T_body_cam
        R1, R2, P1, P2, _Q, _roi1, _roi2 = cv2.stereoRectify(
            cam0.K,
            cam0.dist,
            cam1.K,
            cam1.dist,
            cam0.size,
            T_cam1_cam0[:3, :3].copy(),
            T_cam1_cam0[:3, 3].reshape(3, 1).copy(),
            flags=cv2.CALIB_ZERO_DISPARITY,
            alpha=0.0,
        )
        self._maps = (
            cv2.initUndistortRectifyMap(cam0.K, cam0.dist, R1, P1, cam0.size, cv2.CV_32FC1),
            cv2.initUndistortRectifyMap(cam1.K, cam1.dist, R2, P2, cam1.size, cv2.CV_32FC1),
        )
        self._R_rect_cam0 = np.asarray(R1, dtype=np.float64)
        fx = float(P1[0, 0])
        baseline = float(-P2[0, 3] / P2[0, 0])
        if baseline <= 0:
            raise CalibrationError(f"{self.name}: cam1 is not to the right of cam0")
        camera = PinholeCamera(fx, float(P1[1, 1]), float(P1[0, 2]), float(P1[1, 2]), *cam0.size)
        return Calibration(
            camera=camera, fps=cam0.rate_hz, baseline_m=baseline, bf=baseline * fx, th_depth=35.0
        )

    @property
    def length(self) -> int:
        return len(self._pairs)

    def __iter__(self) -> Iterator[SensorFrame]:
        size = self._cam0.size
        for index, (stamp_ns, left_path, right_path) in enumerate(self._pairs):
            left = read_grey(left_path, size)
            right = read_grey(right_path, size) if right_path is not None else None
            if self._maps is not None and right is not None:
                (m0x, m0y), (m1x, m1y) = self._maps
                left = np.asarray(cv2.remap(left, m0x, m0y, cv2.INTER_LINEAR), dtype=np.uint8)
                right = np.asarray(cv2.remap(right, m1x, m1y, cv2.INTER_LINEAR), dtype=np.uint8)
            yield SensorFrame(index=index, timestamp=stamp_ns * 1e-9, image=left, right=right)

    def ground_truth(self) -> Trajectory | None:
        csv = self.mav / "state_groundtruth_estimate0" / "data.csv"
        if not csv.is_file():
            return None
        try:
            rows = np.loadtxt(csv, delimiter=",", comments="#", ndmin=2)
        except ValueError as exc:
            raise DataSourceError(f"{csv}: malformed ground truth ({exc})") from exc
        if rows.shape[1] < 8 or len(rows) == 0:
            raise DataSourceError(f"{csv}: expected 'timestamp, p xyz, q wxyz, ...' rows")
        T_cam0_rect = np.eye(4)
        T_cam0_rect[:3, :3] = self._R_rect_cam0.T
        T_body_rect = self._cam0.T_body_cam @ T_cam0_rect
        q_xyzw = q_wxyz_to_xyzw(rows[:, 4:8])
        poses = np.stack(
            [pose_from_t_q_xyzw(r[1:4], q) @ T_body_rect for r, q in zip(rows, q_xyzw)]
        )
        return Trajectory(rows[:, 0] * 1e-9, poses)

"""Pinhole camera with radial-tangential (OpenCV ``k1 k2 p1 p2 k3``) distortion.

Pixel coordinates ``uv`` are (N, 2) float64 arrays in pixels; camera points
``xyz_cam`` are (N, 3) in metres in the optical frame (x right, y down, z forward).
The SLAM core works on *undistorted* keypoints: :meth:`PinholeCamera.undistort_points`
maps raw pixels to the ideal pinhole image, and :meth:`PinholeCamera.project` maps
camera points to that ideal image, ``x ~ K X``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import cv2
import numpy as np
from numpy.typing import NDArray

from slam.camera.limits import check_distortion, check_intrinsics, check_sensor

Array = NDArray[np.float64]


@dataclass(frozen=True)
class PinholeCamera:
    """Intrinsics (pixels), image size (pixels) and distortion ``(k1, k2, p1, p2, k3)``."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    dist: tuple[float, ...] = field(default=(0.0, 0.0, 0.0, 0.0, 0.0))

    def __post_init__(self) -> None:
        """Range checks (:mod:`slam.camera.limits`): :class:`CalibrationError` naming the field."""
        check_intrinsics(self.fx, self.fy, self.cx, self.cy, self.width, self.height)
        check_distortion(self.dist)

    @cached_property
    def K(self) -> Array:
        """Intrinsic matrix (3x3)."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @cached_property
    def K_inv(self) -> Array:
        """Inverse intrinsic matrix (3x3)."""
        return np.asarray(np.linalg.inv(self.K), dtype=np.float64)

    @property
    def dist_coeffs(self) -> Array:
        """Distortion coefficients as OpenCV wants them, (len(dist),)."""
        return np.asarray(self.dist, dtype=np.float64)

    @property
    def is_distorted(self) -> bool:
        """Whether any distortion coefficient is non-zero."""
        return bool(np.any(self.dist_coeffs != 0.0))

    def project(self, xyz_cam: Array) -> Array:
        """Ideal (undistorted) pixels (N, 2) of camera points (N, 3); z must be > 0."""
        xyz = np.asarray(xyz_cam, dtype=np.float64).reshape(-1, 3)
        inv_z = 1.0 / xyz[:, 2]
        u = self.fx * xyz[:, 0] * inv_z + self.cx
        v = self.fy * xyz[:, 1] * inv_z + self.cy
        return np.stack([u, v], axis=1).astype(np.float64, copy=False)

    def project_distorted(self, xyz_cam: Array) -> Array:
        """Raw (distorted) pixels (N, 2) of camera points (N, 3), as the sensor sees them."""
        xyz = np.asarray(xyz_cam, dtype=np.float64).reshape(-1, 1, 3)
        uv, _ = cv2.projectPoints(xyz, np.zeros(3), np.zeros(3), self.K, self.dist_coeffs)
        return np.asarray(uv, dtype=np.float64).reshape(-1, 2)

    def unproject(self, uv: Array, depth: Array) -> Array:
        """Camera points (N, 3) of ideal pixels (N, 2) at depths (N,) along z (metres)."""
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        z = np.asarray(depth, dtype=np.float64).reshape(-1)
        x = (uv[:, 0] - self.cx) / self.fx * z
        y = (uv[:, 1] - self.cy) / self.fy * z
        return np.stack([x, y, z], axis=1).astype(np.float64, copy=False)

    def bearings(self, uv: Array) -> Array:
        """Normalised image coordinates (N, 2) ``K^-1 [u v 1]`` of ideal pixels (N, 2)."""
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        return np.stack([(uv[:, 0] - self.cx) / self.fx, (uv[:, 1] - self.cy) / self.fy], axis=1)

    def undistort_points(self, uv_raw: Array) -> Array:
        """Ideal pixels (N, 2) of raw distorted pixels (N, 2); identity without distortion."""
        uv = np.asarray(uv_raw, dtype=np.float64).reshape(-1, 2)
        if not self.is_distorted or len(uv) == 0:
            return uv.copy()
        out = cv2.undistortPoints(uv.reshape(-1, 1, 2), self.K, self.dist_coeffs, P=self.K)
        return np.asarray(out, dtype=np.float64).reshape(-1, 2)

    def distort_points(self, uv: Array) -> Array:
        """Raw distorted pixels (N, 2) of ideal pixels (N, 2), the inverse of
        :meth:`undistort_points`; identity without distortion."""
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        if not self.is_distorted or len(uv) == 0:
            return uv.copy()
        return self.project_distorted(np.c_[self.bearings(uv), np.ones(len(uv))])

    def in_image(self, uv: Array, margin: float = 0.0) -> NDArray[np.bool_]:
        """Mask (N,) of pixels inside the image, ``margin`` pixels from the border."""
        uv = np.asarray(uv).reshape(-1, 2)
        return (
            (uv[:, 0] >= margin)
            & (uv[:, 1] >= margin)
            & (uv[:, 0] < self.width - margin)
            & (uv[:, 1] < self.height - margin)
        )


@dataclass(frozen=True)
class Calibration:
    """Everything the SLAM core needs to know about a sensor.

    ``camera`` is the (left or colour) camera of the images the core receives,
    already rectified for stereo. ``baseline_m`` is set for stereo rigs (metres),
    ``depth_factor`` for RGB-D (depth in metres = raw value / factor).
    ``th_depth`` is the close/far threshold in multiples of the baseline, as in
    ORB-SLAM; for RGB-D a virtual baseline ``bf / fx`` is used.
    """

    camera: PinholeCamera
    fps: float = 30.0
    baseline_m: float | None = None
    bf: float | None = None
    depth_factor: float | None = None
    th_depth: float = 40.0
    rgb_order: bool = True

    def __post_init__(self) -> None:
        """Range checks (:mod:`slam.camera.limits`): :class:`CalibrationError` naming the field."""
        check_sensor(self.camera.fx, self.fps, self.baseline_m, self.bf, self.depth_factor,
                     self.th_depth)

    @property
    def stereo_bf(self) -> float | None:
        """Baseline times fx (pixels x metres), from the rig or the settings."""
        if self.baseline_m is not None:
            return self.baseline_m * self.camera.fx
        return self.bf

    @property
    def max_close_depth_m(self) -> float | None:
        """Depth (metres) under which a stereo/RGB-D point counts as close (reliable)."""
        bf = self.stereo_bf
        if bf is None:
            return None
        return self.th_depth * bf / self.camera.fx

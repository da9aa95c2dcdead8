"""Sub-pixel refinement of a tracked frame's matches against reference keyframes.

After pose-only optimisation, each matched keypoint is moved to where the patch
its map point shows in its reference keyframe lands in this frame (see
:mod:`slam.features.subpixel`). The tracker then optimises the pose again, weighs
the refined keypoints by how well they now agree with it (:meth:`weigh`), and
optimises once more. A keyframe made from the frame keeps the refined positions
and weights, so observations stay consistent along the chain of reference
keyframes and bundle adjustment trusts them as much as they deserve.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import cv2
import numpy as np
from numpy.typing import NDArray

from slam.camera import PinholeCamera
from slam.features.subpixel import HALF, align_patches
from slam.map.frame import Frame
from slam.map.map import Map

log = logging.getLogger(__name__)

ITERATIONS = 8
GATE_PX = 4.0  # level pixels between a match and its point's projection, at most
MAX_REL_RMS = 0.5  # residual RMS / template contrast above which an alignment is refused
CACHE_KEYFRAMES = 64
NOMINAL_SIGMA = 0.5  # px at level 0: the error of an unrefined (whole-pixel) keypoint
MAX_GAIN = 16.0  # refined keypoints are trusted at most (NOMINAL_SIGMA / 4) px
MIN_FOR_SCALE = 20
RAYLEIGH_MEDIAN = 1.1774  # median of |e| for a 2-D normal error of unit sigma


class KeyframeImages:
    """Grey images of recently used keyframes in one (capacity, H, W) uint8 buffer,
    least recently used slot reused first."""

    def __init__(self, width: int, height: int, capacity: int = CACHE_KEYFRAMES) -> None:
        self.buffer = np.zeros((capacity, height, width), np.uint8)
        self._slot: OrderedDict[int, int] = OrderedDict()

    def slots(self, kf_ids: list[int], frames: list[Frame]) -> NDArray[np.int64] | None:
        """Buffer slot (G,) of each keyframe, loading missing ones; None when there are
        more than fit or one has no pixels of the right size."""
        if len(kf_ids) > len(self.buffer):
            return None
        out = np.empty(len(kf_ids), np.int64)
        for i, kf_id in enumerate(kf_ids):
            slot = self._slot.get(kf_id)
            if slot is None:
                slot = self._load(kf_id, frames[i], keep=kf_ids)
                if slot is None:
                    return None
            self._slot.move_to_end(kf_id)
            out[i] = slot
        return out

    def _load(self, kf_id: int, frame: Frame, keep: list[int]) -> int | None:
        if frame.image is not None:
            grey = frame.image
        elif frame.color is not None:
            grey = np.asarray(cv2.cvtColor(frame.color, cv2.COLOR_BGR2GRAY), np.uint8)
        else:
            return None
        if grey.shape != self.buffer.shape[1:]:
            return None
        if len(self._slot) < len(self.buffer):
            slot = len(self._slot)
        else:  # the least recently used keyframe not needed now
            old = next(k for k in self._slot if k not in keep)
            slot = self._slot.pop(old)
        self.buffer[slot] = grey
        self._slot[kf_id] = slot
        return slot


class SubpixelRefiner:
    """Refines ``frame.uv`` of matched keypoints in place (and ``u_right`` with them)."""

    def __init__(self, camera: PinholeCamera, scale_factors: NDArray[np.float64],
                 max_shift: float) -> None:
        self.camera = camera
        self.scale_factors = scale_factors
        self.max_shift = max_shift
        self.images = KeyframeImages(camera.width, camera.height)

    def refine(self, frame: Frame, image: NDArray[np.uint8], slam_map: Map
               ) -> NDArray[np.int64]:
        """Refine the matches of ``frame`` (tracked: pose and ``point_ids`` set) whose
        grey image is ``image`` (H, W) uint8. Returns the keypoints (M,) that moved."""
        assert frame.T_cam_world is not None
        idx = np.flatnonzero(frame.point_ids >= 0)
        ref = slam_map.reference_observations(frame.point_ids[idx])
        if len(ref.rows) == 0 or image.shape != self.images.buffer.shape[1:]:
            return np.zeros(0, np.int64)
        slots = self.images.slots(ref.kf_ids, ref.frames)
        if slots is None:
            return np.zeros(0, np.int64)
        rows = idx[ref.rows]
        # Matches far from where the current pose puts their point are outliers the
        # optimisation will drop: not worth aligning.
        xyz_cam = ref.xyz_world @ frame.T_cam_world[:3, :3].T + frame.T_cam_world[:3, 3]
        in_front = xyz_cam[:, 2] > 0
        uv_pred = self.camera.project(np.where(in_front[:, None], xyz_cam, 1.0))
        step = self.scale_factors[frame.octave[rows]]
        near = in_front & (np.linalg.norm(uv_pred - frame.uv[rows], axis=1) < GATE_PX * step)
        rows, group, step = rows[near], ref.kf_index[near], step[near]
        T_cur_ref = frame.T_cam_world @ np.linalg.inv(ref.T_cam_world)
        cam = self.camera
        uv_raw, ok = align_patches(
            self.images.buffer, slots, ref.T_cam_world, T_cur_ref, group,
            ref.xyz_world[near], cam.distort_points(ref.uv[near]), image,
            cam.distort_points(frame.uv[rows]), step, cam.fx, cam.fy, HALF, ITERATIONS,
            self.max_shift, MAX_REL_RMS)
        rows = rows[ok]
        frame.move_keypoints(rows, self.camera.undistort_points(uv_raw[ok]))
        return rows

    def weigh(self, frame: Frame, rows: NDArray[np.int64], slam_map: Map) -> float:
        """Raise the information of the refined keypoints ``rows`` that are still
        matched, by how much tighter their residuals are at the frame's pose than an
        unrefined keypoint's: ``gain = clamp((NOMINAL_SIGMA / sigma)^2, 1, MAX_GAIN)``,
        ``sigma`` a robust (median) estimate in level pixels. Returns the gain."""
        assert frame.T_cam_world is not None
        rows = rows[frame.point_ids[rows] >= 0]
        pts = slam_map.point_arrays(frame.point_ids[rows])
        rows = rows[pts.found]
        if len(rows) < MIN_FOR_SCALE:
            return 1.0
        xyz_cam = pts.xyz_world @ frame.T_cam_world[:3, :3].T + frame.T_cam_world[:3, 3]
        uv = self.camera.project(xyz_cam)
        err = np.linalg.norm(uv - frame.uv[rows], axis=1) * np.sqrt(frame.inv_sigma2[rows])
        sigma = float(np.median(err)) / RAYLEIGH_MEDIAN
        gain = float(np.clip((NOMINAL_SIGMA / max(sigma, 1e-9)) ** 2, 1.0, MAX_GAIN))
        frame.inv_sigma2[rows] *= gain
        log.debug("frame %d: %d refined keypoints, sigma %.3f px, gain %.1f",
                  frame.id, len(rows), sigma, gain)
        return gain

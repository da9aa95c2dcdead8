"""Frames with ground truth for learning: images, metric depth, poses, time-span splits,
and exact pixel correspondences between frames.

Depth comes from the sensor (TUM RGB-D) or from stereo disparity (KITTI, semi-global
matching); sequences without depth get homographic pairs instead (:func:`homography_pair`).
A keypoint of frame A is carried to frame B through its depth and the ground-truth
poses, and kept only where B's depth agrees (not occluded) and A's depth is smooth
around it (no depth edge). No torch here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from slam.camera import Calibration, PinholeCamera
from slam.errors import DataSourceError
from slam.io.types import Trajectory

log = logging.getLogger(__name__)

TRAIN, VAL, TEST = 0, 1, 2
SPLIT_NAMES = ("train", "val", "test")
MAX_POSE_GAP_S = 0.02


@dataclass(frozen=True)
class SplitSpec:
    """Time-span split of each sequence: the first ``train`` share of its frames, then
    ``val``, then the rest for test. Pairs never straddle two spans."""

    train: float = 0.7
    val: float = 0.1

    def __post_init__(self) -> None:
        if not (0.0 < self.train < 1.0 and self.val >= 0.0 and self.train + self.val <= 1.0):
            raise ValueError(f"invalid split {self.train}/{self.val}")

    def of(self, n_frames: int) -> NDArray[np.int8]:
        """Span (F,) of each of ``n_frames`` frames: TRAIN, VAL or TEST."""
        pos = np.arange(n_frames) / max(n_frames, 1)
        out = np.full(n_frames, TEST, np.int8)
        out[pos < self.train + self.val] = VAL
        out[pos < self.train] = TRAIN
        return out


@dataclass
class LearnFrame:
    """One frame: ``image`` (H, W) uint8 grey, ``depth_m`` (H, W) float32 metres (0 =
    unknown) or None, ``T_world_cam`` (4, 4) or None, ``index`` in the sequence, ``stamp`` s."""

    index: int
    stamp: float
    image: NDArray[np.uint8]
    depth_m: NDArray[np.float32] | None
    T_world_cam: NDArray[np.float64] | None


@dataclass
class Sequence:
    """A sequence opened for learning: its name, camera, frame count and frame iterator."""

    name: str
    calibration: Calibration
    length: int
    frames: Iterator[LearnFrame]
    has_depth: bool


def pose_at(gt: Trajectory, stamp: float, max_gap_s: float = MAX_POSE_GAP_S
            ) -> NDArray[np.float64] | None:
    """Ground-truth pose (4, 4) interpolated at ``stamp`` (linear position, slerp rotation),
    None when no ground-truth sample lies within ``max_gap_s`` on both sides."""
    from scipy.spatial.transform import Rotation, Slerp

    k = int(np.searchsorted(gt.stamps, stamp))
    near = min(k, len(gt.stamps) - 1)
    if abs(gt.stamps[near] - stamp) < 1e-6:
        return gt.T_world_cam[near].copy()
    if k == 0 or k >= len(gt.stamps):
        return None
    t0, t1 = gt.stamps[k - 1], gt.stamps[k]
    if stamp - t0 > max_gap_s or t1 - stamp > max_gap_s:
        return None
    a = (stamp - t0) / (t1 - t0) if t1 > t0 else 0.0
    T0, T1 = gt.T_world_cam[k - 1], gt.T_world_cam[k]
    slerp = Slerp([0.0, 1.0], Rotation.from_matrix(np.stack([T0[:3, :3], T1[:3, :3]])))
    T = np.eye(4)
    T[:3, :3] = slerp([a]).as_matrix()[0]
    T[:3, 3] = (1 - a) * T0[:3, 3] + a * T1[:3, 3]
    return T


def stereo_depth(left: NDArray[np.uint8], right: NDArray[np.uint8], bf: float,
                 max_disp: int = 128) -> NDArray[np.float32]:
    """Depth (H, W) float32 metres of a rectified pair by semi-global matching
    (``bf`` = baseline x focal, pixel metres); 0 where the disparity is unknown.
    Left-right consistency is checked against the right-to-left disparity."""
    sgbm = cv2.StereoSGBM.create(minDisparity=0, numDisparities=max_disp, blockSize=5,
                                 P1=8 * 25, P2=32 * 25, uniquenessRatio=10,
                                 speckleWindowSize=100, speckleRange=2,
                                 mode=cv2.STEREO_SGBM_MODE_SGBM_3WAY)
    disp = sgbm.compute(left, right).astype(np.float32) / 16.0
    # right-to-left disparity: match the mirrored images
    disp_r = sgbm.compute(right[:, ::-1].copy(), left[:, ::-1].copy())[:, ::-1]
    disp_r = disp_r.astype(np.float32) / 16.0
    h, w = disp.shape
    cols = np.arange(w)[None, :] - np.rint(np.maximum(disp, 0)).astype(np.int64)
    back = np.take_along_axis(disp_r, np.clip(cols, 0, w - 1), axis=1)
    ok = (disp > 1.0) & (cols >= 0) & (np.abs(back - disp) <= 1.0)
    depth = np.zeros((h, w), np.float32)
    depth[ok] = bf / disp[ok]
    return depth


def _sensor_for(uri: str) -> str:
    """The sensor that gives ``uri`` depth: RGB-D, else stereo, else mono."""
    from slam.io.sources import open_source

    probe = open_source(uri, "mono")
    sensors = probe.sensors
    probe.close()
    return "rgbd" if "rgbd" in sensors else "stereo" if "stereo" in sensors else "mono"


def open_sequence(uri: str, max_frames: int | None = None) -> Sequence:
    """Open ``uri`` (any :func:`slam.io.sources.open_source` URI) with depth where it has
    some (RGB-D, else stereo) and ground truth where it has some."""
    from slam.io.sources import open_source

    sensor = _sensor_for(uri)
    source = open_source(uri, sensor)
    calib = source.calibration
    if calib is None:
        raise DataSourceError(f"{uri}: no calibration")
    gt = source.ground_truth()
    n = source.length
    if n is None:
        raise DataSourceError(f"{uri}: a live source cannot be used for learning")
    n = n if max_frames is None else min(n, max_frames)
    has_depth = sensor != "mono" and gt is not None
    bf = float(calib.stereo_bf or 0.0)

    def frames() -> Iterator[LearnFrame]:
        try:
            for sf in source:
                if sf.index >= n:
                    return
                depth = sf.depth_m
                if sensor == "stereo" and sf.right is not None:
                    depth = stereo_depth(sf.image, sf.right, bf)
                pose = None
                if gt is not None:
                    pose = pose_at(gt, sf.timestamp)
                yield LearnFrame(sf.index, sf.timestamp, sf.image, depth, pose)
        finally:
            source.close()

    return Sequence(source.name, calib, n, frames(), has_depth)


def _smooth_depth(depth: NDArray[np.float32], u: NDArray[np.int64], v: NDArray[np.int64],
                  d: NDArray[np.float64], tol: float) -> NDArray[np.bool_]:
    """Mask (N,) of pixels whose 3x3 neighbourhood has depths within ``tol`` * d + 1 cm."""
    h, w = depth.shape
    ok = np.ones(len(u), bool)
    for dv in (-1, 0, 1):
        for du in (-1, 0, 1):
            nb = depth[np.clip(v + dv, 0, h - 1), np.clip(u + du, 0, w - 1)]
            ok &= np.abs(nb - d) <= tol * d + 0.01
    return ok


@dataclass
class Projection:
    """Keypoints of frame A carried into frame B: ``uv_raw_b`` (N, 2) raw pixels,
    ``valid`` (N,) where the correspondence is trustworthy, ``xyz_world`` (N, 3)."""

    uv_raw_b: NDArray[np.float64]
    valid: NDArray[np.bool_]
    xyz_world: NDArray[np.float64]


def project_to(cam: PinholeCamera, uv_raw_a: NDArray[np.float64], a: LearnFrame,
               b: LearnFrame, rel_tol: float = 0.04, margin: float = 8.0) -> Projection:
    """Where the keypoints ``uv_raw_a`` (N, 2) of frame ``a`` land in frame ``b``.

    Valid: A has a smooth depth there, the point is in front of B and inside it
    (``margin`` pixels from the border), and B's depth agrees within ``rel_tol``
    (relative) + 2 cm, so the point is not occluded in B.
    """
    n = len(uv_raw_a)
    out = Projection(np.full((n, 2), np.nan), np.zeros(n, bool), np.full((n, 3), np.nan))
    if n == 0 or a.depth_m is None or b.depth_m is None or a.T_world_cam is None \
            or b.T_world_cam is None:
        return out
    h, w = a.depth_m.shape
    u = np.clip(np.rint(uv_raw_a[:, 0]).astype(np.int64), 0, w - 1)
    v = np.clip(np.rint(uv_raw_a[:, 1]).astype(np.int64), 0, h - 1)
    d = a.depth_m[v, u].astype(np.float64)
    ok = (d > 0.1) & np.isfinite(d)
    ok &= _smooth_depth(a.depth_m, u, v, d, rel_tol)
    xyz_a = cam.unproject(cam.undistort_points(uv_raw_a), d)
    xyz_w = xyz_a @ a.T_world_cam[:3, :3].T + a.T_world_cam[:3, 3]
    T_b_w = np.linalg.inv(b.T_world_cam)
    xyz_b = xyz_w @ T_b_w[:3, :3].T + T_b_w[:3, 3]
    ok &= xyz_b[:, 2] > 0.1
    uv_b = np.full((n, 2), np.nan)
    if ok.any():
        uv_b[ok] = cam.project_distorted(xyz_b[ok])
    ok &= np.isfinite(uv_b).all(axis=1)
    ok[ok] = cam.in_image(uv_b[ok], margin)
    ub = np.clip(np.rint(np.nan_to_num(uv_b[:, 0])).astype(np.int64), 0, w - 1)
    vb = np.clip(np.rint(np.nan_to_num(uv_b[:, 1])).astype(np.int64), 0, h - 1)
    db = b.depth_m[vb, ub].astype(np.float64)
    ok &= (db > 0) & (np.abs(db - xyz_b[:, 2]) <= rel_tol * xyz_b[:, 2] + 0.02)
    out.uv_raw_b = uv_b
    out.valid = ok
    out.xyz_world = np.where(ok[:, None], xyz_w, np.nan)
    return out


def _flow(img0: NDArray[np.uint8], img1: NDArray[np.uint8], p0: NDArray[np.float32],
          guess: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.uint8]]:
    """Pyramidal Lucas-Kanade of points (N, 1, 2) started at ``guess``: (points, status)."""
    import cv2

    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 30, 0.01)
    p1, status, _ = cv2.calcOpticalFlowPyrLK(img0, img1, p0, guess, winSize=(21, 21),
                                             maxLevel=2, criteria=crit,
                                             flags=cv2.OPTFLOW_USE_INITIAL_FLOW)
    return np.asarray(p1, np.float32), np.asarray(status, np.uint8)


class FlowTracks:
    """Keypoints of frame A followed frame by frame with pyramidal Lucas-Kanade, every
    step started at the ground-truth projection (depth + poses) and checked against it.

    The motion-capture poses of fast hand-held sequences are off by 1-3 px between
    frames (timing, calibration); tracking removes that error without looking at any
    descriptor, so ORB and learned descriptors are scored against the same, sharper
    truth. A track ends when the flow fails, does not come back to where it started
    within ``max_fb_px`` (forward-backward check), strays more than ``max_shift_px``
    from the projection, or the point is occluded or leaves the image.
    """

    def __init__(self, cam: PinholeCamera, a: LearnFrame, uv_raw_a: NDArray[np.float64],
                 max_shift_px: float = 8.0, max_fb_px: float = 1.0) -> None:
        self.cam = cam
        self.a = a
        self.uv_a = np.asarray(uv_raw_a, np.float64).reshape(-1, 2)
        self.uv = self.uv_a.astype(np.float32)
        self.alive = np.ones(len(self.uv_a), bool)
        self.prev = a.image
        self.max_shift_px = max_shift_px
        self.max_fb_px = max_fb_px

    def advance(self, b: LearnFrame) -> Projection:
        """Follow the live tracks into the next frame ``b``; where A's keypoints are in b."""
        proj = project_to(self.cam, self.uv_a, self.a, b)
        self.alive &= proj.valid
        sel = np.flatnonzero(self.alive)
        if len(sel):
            p0 = self.uv[sel].reshape(-1, 1, 2)
            guess = proj.uv_raw_b[sel].astype(np.float32).reshape(-1, 1, 2)
            p1, st1 = _flow(self.prev, b.image, p0, guess)
            back, st2 = _flow(b.image, self.prev, p1, p0.copy())
            p1, back = p1.reshape(-1, 2), back.reshape(-1, 2)
            ok = (st1.ravel() == 1) & (st2.ravel() == 1)
            ok &= np.linalg.norm(back - self.uv[sel], axis=1) <= self.max_fb_px
            ok &= np.linalg.norm(p1 - proj.uv_raw_b[sel], axis=1) <= self.max_shift_px
            self.uv[sel] = p1
            self.alive[sel] = ok
        self.prev = b.image
        uv = np.where(self.alive[:, None], self.uv.astype(np.float64), np.nan)
        xyz = np.where(self.alive[:, None], proj.xyz_world, np.nan)
        return Projection(uv, self.alive.copy(), xyz)


def nearest_keypoints(uv_query: NDArray[np.float64], uv_kp: NDArray[np.float64],
                      max_px: float, octave_query: NDArray[np.int32] | None = None,
                      octave_kp: NDArray[np.int32] | None = None) -> NDArray[np.int64]:
    """Index (N,) of the keypoint (M, 2) matching each query (N, 2) within ``max_px``
    (-1 when none, or when the query is NaN): the nearest one, or, given octaves, the one
    of the closest octave (ORB finds one corner on several levels), then the nearest."""
    from scipy.spatial import cKDTree

    out = np.full(len(uv_query), -1, np.int64)
    ok = np.flatnonzero(np.isfinite(uv_query).all(axis=1))
    if len(uv_kp) == 0 or len(ok) == 0:
        return out
    tree = cKDTree(uv_kp)
    if octave_query is None or octave_kp is None:
        dist, idx = tree.query(uv_query[ok], distance_upper_bound=max_px)
        found = np.isfinite(dist)
        out[ok[found]] = idx[found]
        return out
    for q, cands in zip(ok, tree.query_ball_point(uv_query[ok], max_px)):
        if not cands:
            continue
        c = np.asarray(cands)
        d = np.linalg.norm(uv_kp[c] - uv_query[q], axis=1)
        out[q] = c[np.lexsort((d, np.abs(octave_kp[c] - octave_query[q])))[0]]
    return out


def random_homography(rng: np.random.Generator, width: int, height: int,
                      max_angle_deg: float = 30.0, scale_range: tuple[float, float] = (0.8, 1.25),
                      perspective: float = 0.15) -> NDArray[np.float64]:
    """A homography (3, 3) that rotates, scales and tilts the image about its centre and
    keeps it mostly in view: each corner moves by at most ``perspective`` of the size."""
    c = np.array([width / 2.0, height / 2.0])
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float64)
    jitter = rng.uniform(-perspective, perspective, (4, 2)) * [width, height] / 2
    a = np.radians(rng.uniform(-max_angle_deg, max_angle_deg))
    s = np.exp(rng.uniform(np.log(scale_range[0]), np.log(scale_range[1])))
    R = s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    moved = (corners + jitter - c) @ R.T + c
    H = cv2.getPerspectiveTransform(corners.astype(np.float32), moved.astype(np.float32))
    return np.asarray(H, np.float64)


def photometric(image: NDArray[np.uint8], rng: np.random.Generator) -> NDArray[np.uint8]:
    """``image`` with random gain, bias, gamma, blur and noise (a different exposure)."""
    x = image.astype(np.float32) / 255.0
    x = np.clip(x ** rng.uniform(0.7, 1.4) * rng.uniform(0.7, 1.3) + rng.uniform(-0.1, 0.1),
                0, 1)
    if rng.random() < 0.4:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.5, 1.5))
    x = x + rng.normal(0, rng.uniform(0, 0.03), x.shape).astype(np.float32)
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


def homography_pair(image: NDArray[np.uint8], rng: np.random.Generator
                    ) -> tuple[NDArray[np.uint8], NDArray[np.float64]]:
    """A warped, re-exposed copy of ``image`` and the homography (3, 3) from ``image``
    pixels to the copy's."""
    h, w = image.shape
    H = random_homography(rng, w, h)
    warped = np.asarray(cv2.warpPerspective(image, H, (w, h), flags=cv2.INTER_LINEAR,
                                            borderMode=cv2.BORDER_REFLECT), np.uint8)
    return photometric(warped, rng), H


def apply_homography(H: NDArray[np.float64], uv: NDArray[np.float64]) -> NDArray[np.float64]:
    """Pixels (N, 2) mapped by the homography (3, 3)."""
    if len(uv) == 0:
        return np.zeros((0, 2))
    p = cv2.perspectiveTransform(uv.reshape(-1, 1, 2).astype(np.float64), H)
    return np.asarray(p, np.float64).reshape(-1, 2)

"""Hand-made frames, keyframes and maps for the map, tracking and mapping tests."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from slam.camera.pinhole import Calibration
from slam.config import FeatureConfig
from slam.geometry.lie import make_pose, se3_inv
from slam.io.types import SensorFrame
from slam.map.frame import Frame
from slam.map.keyframe import KeyFrame
from slam.map.map import Map
from slam.synthetic.source import SyntheticSource, make_synthetic_source
from slam.tracking.frontend import FrameBuilder

Array = NDArray[np.float64]
SCALE_FACTOR = 1.2
N_LEVELS = 8
SCALES = SCALE_FACTOR ** np.arange(N_LEVELS, dtype=np.float64)
LEVEL_SIGMA2 = SCALES**2
K_SMALL = np.array([[250.0, 0.0, 159.5], [0.0, 250.0, 119.5], [0.0, 0.0, 1.0]])
W_SMALL, H_SMALL = 320, 240
BF_SMALL = 25.0  # 0.1 m baseline x fx 250 px


def random_descriptors(rng: np.random.Generator, n: int) -> NDArray[np.uint8]:
    """(n, 32) uniformly random ORB-like descriptors."""
    return rng.integers(0, 256, size=(n, 32), dtype=np.uint8)


def flip_bits(desc: NDArray[np.uint8], n_bits: int, rng: np.random.Generator) -> NDArray[np.uint8]:
    """Copy of ``desc`` (N, 32) with exactly ``n_bits`` distinct bits flipped per row."""
    bits = np.unpackbits(desc, axis=1)
    for row in bits:
        idx = rng.choice(256, size=n_bits, replace=False)
        row[idx] ^= 1
    return np.packbits(bits, axis=1)


def make_frame(
    uv: Array,
    *,
    frame_id: int = 0,
    octave: NDArray[np.int32] | None = None,
    descriptors: NDArray[np.uint8] | None = None,
    depth_m: Array | None = None,
    u_right: Array | None = None,
    width: int = W_SMALL,
    height: int = H_SMALL,
    T_cam_world: Array | None = None,
    rng: np.random.Generator | None = None,
) -> Frame:
    """A :class:`Frame` with keypoints ``uv`` (N, 2) and defaults for everything else."""
    uv = np.asarray(uv, np.float64).reshape(-1, 2)
    n = len(uv)
    octave = np.zeros(n, np.int32) if octave is None else np.asarray(octave, np.int32)
    if descriptors is None:
        descriptors = random_descriptors(rng or np.random.default_rng(0), n)
    depth_m = np.full(n, -1.0) if depth_m is None else np.asarray(depth_m, np.float64)
    u_right = np.full(n, -1.0) if u_right is None else np.asarray(u_right, np.float64)
    return Frame(
        id=frame_id, timestamp=float(frame_id), uv=uv, octave=octave,
        descriptors=np.ascontiguousarray(descriptors, np.uint8), depth_m=depth_m,
        u_right=u_right, inv_sigma2=1.0 / LEVEL_SIGMA2[octave], width=width, height=height,
        T_cam_world=None if T_cam_world is None else T_cam_world.copy(),
    )


def make_keyframe(slam_map: Map, frame: Frame, T_cam_world: Array) -> KeyFrame:
    """Register a keyframe (next id) holding ``frame`` at pose ``T_cam_world``."""
    frame.T_cam_world = T_cam_world.copy()
    kf = KeyFrame(id=slam_map.new_keyframe_id(), frame=frame, T_cam_world=T_cam_world.copy())
    slam_map.add_keyframe(kf)
    return kf


def project(K: Array, T_cam_world: Array, xyz_world: Array) -> tuple[Array, Array]:
    """Ideal pixels (N, 2) and depths (N,) of world points (N, 3)."""
    xyz_cam = xyz_world @ T_cam_world[:3, :3].T + T_cam_world[:3, 3]
    uvw = xyz_cam @ K.T
    return uvw[:, :2] / uvw[:, 2:], xyz_cam[:, 2]


def feature_config(**overrides: object) -> FeatureConfig:
    """The default feature configuration, with ``overrides``."""
    return FeatureConfig.model_validate(overrides)


@lru_cache(maxsize=4)
def synthetic_source(sensor: str, width: int = W_SMALL, height: int = H_SMALL) -> SyntheticSource:
    """The 60-frame synthetic loop (6 degrees / ~10 cm per frame) for ``sensor``."""
    return make_synthetic_source("loop", sensor, n_frames=60, width=width, height=height)


@lru_cache(maxsize=32)
def synthetic_sensor_frame(sensor: str, index: int, width: int = W_SMALL,
                           height: int = H_SMALL) -> SensorFrame:
    """Rendered frame ``index`` of :func:`synthetic_source` (cached; do not modify)."""
    return synthetic_source(sensor, width, height).frame(index)


def synthetic_calibration(sensor: str) -> Calibration:
    """Calibration of :func:`synthetic_source` for ``sensor``."""
    calib = synthetic_source(sensor).calibration
    assert calib is not None
    return calib


def gt_T_cam_world(index: int) -> Array:
    """Ground-truth camera-from-world pose (4x4) of frame ``index`` of the loop."""
    T_world_cam = synthetic_source("rgbd").ground_truth().T_world_cam[index]
    return np.asarray(se3_inv(T_world_cam), np.float64)


def synthetic_frame(sensor: str, index: int, frame_id: int | None = None) -> Frame:
    """A fresh :class:`Frame` (features and depth, GT pose set) of loop frame ``index``."""
    builder = FrameBuilder(synthetic_calibration(sensor), feature_config(), sensor)  # type: ignore[arg-type]
    try:
        frame = builder.build(synthetic_sensor_frame(sensor, index),
                              index if frame_id is None else frame_id)
    finally:
        builder.close()
    frame.T_cam_world = gt_T_cam_world(index)
    return frame


N_KP = 100  # keypoints of each keyframe of map_with_keyframes


def camera_at(x: float) -> np.ndarray:
    """T_cam_world of a camera at (x, 0, 0) looking along +z (world)."""
    return np.asarray(se3_inv(make_pose(np.eye(3), np.array([x, 0.0, 0.0]))), np.float64)


def map_with_keyframes(n_kf: int, seed: int = 0) -> tuple[Map, list[KeyFrame]]:
    """A map of ``n_kf`` keyframes 0.1 m apart along x, N_KP random keypoints each
    (levels 0-2), no points."""
    rng = np.random.default_rng(seed)
    m = Map(SCALE_FACTOR, N_LEVELS)
    kfs = []
    for k in range(n_kf):
        uv = rng.uniform([0, 0], [320, 240], size=(N_KP, 2))
        octave = rng.integers(0, 3, N_KP).astype(np.int32)
        frame = make_frame(uv, frame_id=k, octave=octave, rng=rng)
        kfs.append(make_keyframe(m, frame, camera_at(0.1 * k)))
    return m, kfs


def share_points(m: Map, kfs: list[KeyFrame], n: int, start: int = 0) -> list[int]:
    """``n`` new points seen by every keyframe in ``kfs`` at keypoints start..start+n."""
    pids = []
    rng = np.random.default_rng(start)
    for i in range(start, start + n):
        mp = m.add_point(rng.uniform([-1, -1, 3], [1, 1, 5]), kfs[0], i)
        for kf in kfs[1:]:
            m.add_observation(mp.id, kf.id, i)
        pids.append(mp.id)
    return pids

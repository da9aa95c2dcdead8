"""Map initialisation: from one stereo/RGB-D frame, or from two monocular frames."""

from __future__ import annotations

import logging

import numpy as np
from numpy.typing import NDArray

from slam.features.matching import search_by_projection
from slam.geometry.twoview import initialize_two_view
from slam.map.frame import Frame
from slam.map.keyframe import KeyFrame
from slam.map.map import Map

log = logging.getLogger(__name__)


def add_depth_points(
    slam_map: Map, kf: KeyFrame, K: NDArray[np.float64], max_close_depth: float,
    min_new: int = 100,
) -> int:
    """Create map points from keypoints with depth that have none yet, closest first.

    All close points (depth < ``max_close_depth``) are added, and far ones until
    ``min_new`` exist (ORB-SLAM's rule). Returns the number of points created.
    """
    f = kf.frame
    cand = np.flatnonzero(f.depth_m > 0)
    cand = cand[np.argsort(f.depth_m[cand])]
    if len(cand) == 0:
        return 0
    xyz_cam = _unproject(f, cand, K)
    T_world_cam = kf.T_world_cam
    xyz_world = xyz_cam @ T_world_cam[:3, :3].T + T_world_cam[:3, 3]
    # All close points, then far ones (closest first) until min_new are counted.
    far = f.depth_m[cand] > max_close_depth
    counted = np.arange(len(cand))  # candidates counted before each one
    take = ~far | (counted <= min_new)
    cand, xyz_world = cand[take], xyz_world[take]
    with slam_map.lock:
        keep = ~slam_map.store.alive_mask(f.point_ids[cand])  # no live point there yet
        new_ids = slam_map.add_points(xyz_world[keep], kf, cand[keep])
        slam_map.update_normals_and_depths(new_ids.tolist())
    return len(new_ids)


def _unproject(f: Frame, idx: NDArray[np.int64], K: NDArray[np.float64]) -> NDArray[np.float64]:
    """Camera points (M, 3) of keypoints ``idx`` from their ideal pixels and depths."""
    z = f.depth_m[idx]
    return np.stack(
        [(f.uv[idx, 0] - K[0, 2]) / K[0, 0] * z, (f.uv[idx, 1] - K[1, 2]) / K[1, 1] * z, z], axis=1
    )


def initialize_from_depth(
    slam_map: Map, frame: Frame, K: NDArray[np.float64], max_close_depth: float
) -> KeyFrame | None:
    """First keyframe at the world origin with points from stereo/RGB-D depth."""
    if np.count_nonzero(frame.depth_m > 0) < 500:
        return None
    frame.T_cam_world = np.eye(4)
    kf = KeyFrame(id=slam_map.new_keyframe_id(), frame=frame, T_cam_world=np.eye(4))
    slam_map.add_keyframe(kf)
    add_depth_points(slam_map, kf, K, max_close_depth, min_new=10**9)
    log.info("map initialised from depth: %d points", slam_map.n_points())
    return kf


InitMatch = tuple[
    Frame, NDArray[np.float64], NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]
]


class MonocularInitializer:
    """Two-view initialisation: F or H, cheirality, triangulation (ORB-SLAM style)."""

    def __init__(self, K: NDArray[np.float64], min_matches: int = 100, seed: int = 0) -> None:
        self.K = K
        self.min_matches = min_matches
        self.reference: Frame | None = None
        self.rng = np.random.default_rng(seed)

    def try_initialize(
        self, frame: Frame
    ) -> InitMatch | None:
        """Feed a frame. On success returns ``(reference, T_cam2_cam1, idx_ref, idx_cur, xyz_cam1)``
        for the good correspondences; otherwise None (the frame may become the reference)."""
        if len(frame) < self.min_matches:
            self.reference = None
            return None
        if self.reference is None:
            self.reference = frame
            return None
        ref = self.reference
        idx, _ = search_by_projection(
            ref.uv, ref.octave, np.full(len(ref), 100.0), ref.descriptors, frame.grid,
            frame.uv, frame.octave, frame.descriptors, np.ones(len(frame), bool),
            th_high=50, ratio=0.9, level_window=0,
        )
        i_ref = np.flatnonzero(idx >= 0)
        i_cur = idx[i_ref]
        if len(i_ref) < self.min_matches:
            self.reference = frame
            return None
        res = initialize_two_view(ref.uv[i_ref], frame.uv[i_cur], self.K, self.rng)
        if res is None:
            return None
        good = res.good
        if np.count_nonzero(good) < self.min_matches:
            return None
        log.info("monocular initialisation: model %s, %d points, parallax %.1f deg",
                 res.model, int(good.sum()), res.parallax_deg)
        return ref, res.T_cam2_cam1, i_ref[good], i_cur[good], res.xyz_cam1[good]

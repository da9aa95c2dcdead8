"""A hand-made map of keyframes on a ring, for the loop-correction tests.

Keyframes sit on a circle looking outwards at a cylinder of points; each point is
observed (exact projections) by the keyframes that see it, so reprojection errors
are zero at the ground truth. ``drift`` corrupts the second half of the ring and
its points with a growing rigid error, as odometry would.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from slam.geometry.lie import make_pose, se3_exp, se3_inv
from slam.map.map import Map
from tests.map.factories import H_SMALL, K_SMALL, W_SMALL, make_frame, make_keyframe, project

Array = NDArray[np.float64]


def ring_poses(n: int, radius: float = 1.0) -> list[Array]:
    """Ground-truth ``T_cam_world`` of ``n`` cameras on a circle, looking outwards."""
    poses = []
    for k in range(n):
        th = 2 * np.pi * k / n
        c = np.array([radius * np.cos(th), radius * np.sin(th), 0.0])
        z = np.array([np.cos(th), np.sin(th), 0.0])  # optical axis outwards
        y = np.array([0.0, 0.0, -1.0])
        x = np.cross(y, z)
        R_world_cam = np.stack([x, y, z], axis=1)
        poses.append(se3_inv(make_pose(R_world_cam, c)))
    return poses


def ring_points(n_points: int, rng: np.random.Generator, radius: float = 3.0) -> Array:
    th = rng.uniform(0, 2 * np.pi, n_points)
    h = rng.uniform(-0.8, 0.8, n_points)
    return np.stack([radius * np.cos(th), radius * np.sin(th), h], axis=1)


def build_ring_map(n_kf: int = 12, n_points: int = 1500, seed: int = 0
                   ) -> tuple[Map, list[Array], Array]:
    """The map, ground-truth keyframe poses and ground-truth points (by point id).

    The ring is left open: a point seen by both the first and the last keyframe keeps
    only its observations in the first half, as if the loop had not been closed.
    """
    rng = np.random.default_rng(seed)
    gt = ring_poses(n_kf)
    xyz = ring_points(n_points, rng)
    m = Map()
    obs: list[list[tuple[int, int]]] = [[] for _ in range(n_points)]
    kfs = []
    for k, T in enumerate(gt):
        uv, z = project(K_SMALL, T, xyz)
        vis = np.flatnonzero((z > 0.1) & (uv[:, 0] >= 0) & (uv[:, 0] < W_SMALL)
                             & (uv[:, 1] >= 0) & (uv[:, 1] < H_SMALL))
        frame = make_frame(uv[vis], frame_id=k, rng=rng)
        kf = make_keyframe(m, frame, T)
        kfs.append((kf, vis))
        for i, p in enumerate(vis):
            obs[p].append((kf.id, i))
    pid_of = np.full(n_points, -1)
    for p in range(n_points):
        ids = [k for k, _ in obs[p]]
        if 0 in ids and n_kf - 1 in ids:
            obs[p] = [(k, i) for k, i in obs[p] if k < n_kf // 2]
        if len(obs[p]) < 2:
            continue
        kf0, i0 = obs[p][0]
        mp = m.add_point(xyz[p], m.keyframes[kf0], i0)
        pid_of[p] = mp.id
        for kid, i in obs[p][1:]:
            m.add_observation(mp.id, kid, i)
    with m.lock:
        m.update_normals_and_depths(list(m.points))
        for kf, _ in kfs:
            m.update_connections(kf.id)
    gt_xyz = np.zeros((m._next_pt, 3))
    for p in range(n_points):
        if pid_of[p] >= 0:
            gt_xyz[pid_of[p]] = xyz[p]
    return m, gt, gt_xyz


def drift(m: Map, start: int, step: float = 0.02, seed: int = 1) -> None:
    """Corrupt keyframes ``start..`` and the points first seen there with a rigid error
    that grows by ``step`` (radians / metres) per keyframe."""
    rng = np.random.default_rng(seed)
    xi = rng.normal(size=6)
    xi /= np.linalg.norm(xi)
    for kid in sorted(m.keyframes):
        if kid < start:
            continue
        E = se3_exp(xi * step * (kid - start + 1))  # world-side error
        kf = m.keyframes[kid]
        kf.T_cam_world = kf.T_cam_world @ se3_inv(E)
        for p in kf.point_ids[kf.point_ids >= 0]:
            mp = m.points[int(p)]
            if mp.first_kf_id == kid:
                mp.xyz_world = E[:3, :3] @ mp.xyz_world + E[:3, 3]

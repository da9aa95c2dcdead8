"""Geometric verification of a loop candidate: match, align by Sim(3)/SE(3), project.

For each candidate keyframe: ORB matches between the map points of the current and
the candidate keyframe; a similarity (monocular) or rigid transform (stereo/RGB-D)
by RANSAC and refinement; then the candidate's covisible neighbourhood is projected
into the current keyframe with the found transform, and the loop is accepted when
enough of its points match.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from slam.features.matching import match_ratio, search_by_projection
from slam.loop.pose_graph import sim3_to_se3
from slam.loop.sim3_solver import refine_sim3, solve_sim3_ransac
from slam.map.keyframe import KeyFrame
from slam.map.map import Map
from slam.map.projection import project_into

log = logging.getLogger(__name__)


@dataclass
class LoopMatch:
    """An accepted loop: ``S_cur_world`` (4x4 similarity) is the current keyframe's
    pose as seen from the loop side; ``matches`` maps a keypoint index of the current
    keyframe to the loop-side map point id it matched; ``loop_pids`` are the points of
    the loop keyframe's neighbourhood."""

    cur_kf_id: int
    loop_kf_id: int
    S_cur_world: NDArray[np.float64]
    scale: float
    matches: dict[int, int] = field(default_factory=dict)
    loop_pids: list[int] = field(default_factory=list)
    n_inliers: int = 0


@dataclass
class VerifyParams:
    """Thresholds of :func:`verify_candidates`."""

    min_matches: int = 20
    min_inliers: int = 20
    min_projected_matches: int = 40
    fix_scale: bool = True


def _keyframe_points(slam_map: Map, kf: KeyFrame) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Keypoint indices of ``kf`` that carry a live map point, and those point ids."""
    with slam_map.lock:
        kp = np.flatnonzero(kf.point_ids >= 0)
        pids = kf.point_ids[kp].copy()
        alive = slam_map.store.alive_mask(pids)
    return kp[alive], pids[alive]


def _to_cam(slam_map: Map, T_cam_world: NDArray[np.float64], pids: NDArray[np.int64]
            ) -> NDArray[np.float64]:
    xyz = slam_map.store.get("xyz", pids)
    return xyz @ T_cam_world[:3, :3].T + T_cam_world[:3, 3]


def _align(
    slam_map: Map, cur: KeyFrame, cand: KeyFrame, K: NDArray[np.float64], p: VerifyParams,
    rng: np.random.Generator,
) -> tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.int64]] | None:
    """``S_cur_cand`` and the matched (current keypoint, candidate point id) pairs."""
    kp1, pid1 = _keyframe_points(slam_map, cur)
    kp2, pid2 = _keyframe_points(slam_map, cand)
    if len(kp1) < p.min_matches or len(kp2) < p.min_matches:
        return None
    i1, i2 = match_ratio(cur.frame.descriptors[kp1], cand.frame.descriptors[kp2], ratio=0.75,
                         th=64)
    if len(i1) < p.min_matches:
        return None
    with slam_map.lock:
        # Points erased since they were gathered (the lock was released) drop out.
        both = slam_map.store.alive_mask(pid1[i1]) & slam_map.store.alive_mask(pid2[i2])
        i1, i2 = i1[both], i2[both]
        T1, T2 = cur.T_cam_world.copy(), cand.T_cam_world.copy()
        x1 = _to_cam(slam_map, T1, pid1[i1])
        x2 = _to_cam(slam_map, T2, pid2[i2])
    f1, f2 = cur.frame, cand.frame
    a, b = kp1[i1], kp2[i2]
    s2_1, s2_2 = 1.0 / f1.inv_sigma2[a], 1.0 / f2.inv_sigma2[b]
    est = solve_sim3_ransac(x1, x2, f1.uv[a], f2.uv[b], s2_1, s2_2, K, fix_scale=p.fix_scale,
                            min_inliers=p.min_inliers, rng=rng)
    if est is None:
        return None
    # Refine on the RANSAC inliers: far outliers would pull even a Huber-robust
    # refinement off the consensus (seen on the synthetic loop).
    r = est.inliers
    a, x1, x2, pid_loop = a[r], x1[r], x2[r], pid2[i2][r]
    b = b[r]
    S, inl = refine_sim3(est.S_cam1_cam2, x1, x2, f1.uv[a], f2.uv[b], f1.inv_sigma2[a],
                         f2.inv_sigma2[b], K, fix_scale=p.fix_scale)
    if int(inl.sum()) < p.min_inliers:
        return None
    return S, a[inl], pid_loop[inl]


def _loop_group_points(slam_map: Map, cand: KeyFrame) -> NDArray[np.int64]:
    """Point ids of the candidate and its best covisible keyframes."""
    with slam_map.lock:
        group = [cand.id] + [k for k in cand.best_covisible(10) if not slam_map.keyframes[k].bad]
        return slam_map.point_ids_of(group)


def _project_loop_points(
    slam_map: Map, kf: KeyFrame, loop_pids: NDArray[np.int64], S_kf_world: NDArray[np.float64],
    K: NDArray[np.float64], known: dict[int, int],
) -> dict[int, int]:
    """Match the loop side's points into ``kf`` posed at ``S_kf_world`` (keypoint index
    -> point id, starting from ``known``)."""
    pts = slam_map.point_arrays(loop_pids)
    T_proj, _scale = sim3_to_se3(S_kf_world)
    f = kf.frame
    proj = project_into(f, T_proj, K, pts.xyz_world, pts.normals, pts.min_dist, pts.max_dist,
                        slam_map.scale_factor, slam_map.n_levels)
    matches = dict(known)
    if len(proj.keep):
        taken = np.zeros(len(f), bool)
        taken[list(matches)] = True
        radius = np.asarray(10.0 * slam_map.scale_factor ** proj.level, np.float64)
        idx, _ = search_by_projection(
            proj.uv, proj.level, radius, pts.descriptors[proj.keep], f.grid, f.uv, f.octave,
            f.descriptors, ~taken, th_high=100, ratio=1.0, level_window=1,
        )
        for j in np.flatnonzero(idx >= 0):
            matches.setdefault(int(idx[j]), int(pts.ids[proj.keep[j]]))
    return matches


def confirmed_by_neighbours(
    slam_map: Map, lm: LoopMatch, K: NDArray[np.float64], n_required: int, min_matches: int,
) -> bool:
    """Whether the loop also shows in ``n_required`` covisible neighbours of the
    current keyframe: posed by the loop transform, each must match ``min_matches``
    of the loop side's points."""
    with slam_map.lock:
        cur = slam_map.keyframes[lm.cur_kf_id]
        T_world_cur = cur.T_world_cam
        neighbours = [slam_map.keyframes[k] for k in cur.best_covisible(6)
                      if not slam_map.keyframes[k].bad]
        poses = [n.T_cam_world @ T_world_cur for n in neighbours]
    pids = np.asarray(lm.loop_pids, np.int64)
    n_ok = 0
    for nkf, T_n_cur in zip(neighbours, poses):
        if nkf.id == lm.loop_kf_id:
            continue
        matches = _project_loop_points(slam_map, nkf, pids, T_n_cur @ lm.S_cur_world, K, {})
        log.debug("loop %d -> %d: neighbour %d matches %d", lm.cur_kf_id, lm.loop_kf_id,
                  nkf.id, len(matches))
        n_ok += len(matches) >= min_matches
        if n_ok >= n_required:
            return True
    return False


def verify_candidates(
    slam_map: Map, cur: KeyFrame, candidates: list[int], K: NDArray[np.float64],
    params: VerifyParams, rng: np.random.Generator | None = None,
) -> LoopMatch | None:
    """The first candidate that passes alignment and projection checks, or None."""
    rng = rng or np.random.default_rng(0)
    for cid in candidates:
        cand = slam_map.keyframes.get(cid)
        if cand is None or cand.bad or cur.bad:
            continue
        aligned = _align(slam_map, cur, cand, K, params, rng)
        if aligned is None:
            continue
        S_cur_cand, kp_cur, loop_pid = aligned
        with slam_map.lock:
            S_cand_world = cand.T_cam_world.copy()
        S_cur_world = S_cur_cand @ S_cand_world
        known = {int(k): int(p) for k, p in zip(kp_cur, loop_pid)}
        loop_pids = _loop_group_points(slam_map, cand)
        matches = _project_loop_points(slam_map, cur, loop_pids, S_cur_world, K, known)
        log.debug("loop candidate %d for %d: %d inliers, %d projected matches", cid, cur.id,
                  len(known), len(matches))
        if len(matches) >= params.min_projected_matches:
            _, scale = sim3_to_se3(S_cur_world)
            return LoopMatch(cur.id, cid, S_cur_world, scale, matches, loop_pids.tolist(),
                             len(known))
    return None

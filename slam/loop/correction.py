"""Loop correction: move the current neighbourhood onto the loop, fuse duplicated
points, and spread the correction over the map by essential-graph optimisation.

Similarities are 4x4 ``S = [[s R, t], [0, 1]]``; a keyframe pose as a similarity is
``S_cam_world``, and a corrected keyframe gets ``T_cam_world = [R | t / s]``. Map
points follow the keyframe that corrected them (or their reference keyframe):
``xyz_new = S_new^-1 S_old xyz``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from slam.geometry.lie import sim3_inv
from slam.loop.pose_graph import PoseGraphEdge, optimize_essential_graph, sim3_to_se3
from slam.loop.verify import LoopMatch
from slam.map.map import Map
from slam.mapping.fuse import fuse_into

log = logging.getLogger(__name__)
Array = NDArray[np.float64]


@dataclass
class CorrectionParams:
    """Settings of :func:`correct_loop`."""

    K: Array
    bf: float
    scale_factors: Array
    fix_scale: bool
    min_weight: int = 100
    iterations: int = 20


def _apply(S: Array, xyz: Array) -> Array:
    return xyz @ S[:3, :3].T + S[:3, 3]


def _correct_neighbourhood(
    slam_map: Map, lm: LoopMatch, connected: list[int]
) -> tuple[dict[int, Array], dict[int, Array]]:
    """Pose the connected keyframes and their points at the loop. Returns the
    corrected and the original similarities of the connected keyframes."""
    T_world_cur = slam_map.keyframes[lm.cur_kf_id].T_world_cam
    S_corr: dict[int, Array] = {}
    S_orig: dict[int, Array] = {}
    for k in connected:
        T = slam_map.keyframes[k].T_cam_world
        S_orig[k] = T.copy()
        S_corr[k] = (T @ T_world_cur) @ lm.S_cur_world
    done: set[int] = set()
    for k in connected:
        kf = slam_map.keyframes[k]
        pids = [int(p) for p in kf.point_ids[kf.point_ids >= 0]
                if int(p) not in done and int(p) in slam_map.points]
        if pids:
            ids = np.asarray(pids, np.int64)
            M = sim3_inv(S_corr[k]) @ S_orig[k]
            slam_map.store.set("xyz", ids, _apply(M, slam_map.store.get("xyz", ids)))
            done.update(pids)
            for p in pids:
                slam_map.points[p].ref_kf_id = k
    for k in connected:
        slam_map.keyframes[k].T_cam_world = sim3_to_se3(S_corr[k])[0]
    slam_map.update_normals_and_depths(done)
    return S_corr, S_orig


def _fuse_loop_matches(slam_map: Map, lm: LoopMatch) -> None:
    """The current keyframe's matched keypoints take the loop side's points."""
    cur = slam_map.keyframes[lm.cur_kf_id]
    for kp, loop_pid in lm.matches.items():
        if loop_pid not in slam_map.points:
            continue
        own = int(cur.point_ids[kp])
        if own == loop_pid:
            continue
        if own >= 0 and own in slam_map.points:
            slam_map.replace_point(own, loop_pid)
        elif cur.id not in slam_map.points[loop_pid].observations:
            slam_map.add_observation(loop_pid, cur.id, kp)


def _essential_graph_edges(
    slam_map: Map, S_init: dict[int, Array], S_orig: dict[int, Array],
    new_links: dict[int, set[int]], min_weight: int,
) -> list[PoseGraphEdge]:
    """Loop links (at the corrected poses), spanning tree, old loops and strong
    covisibility (at the poses before the correction)."""
    edges: list[PoseGraphEdge] = []
    seen: set[tuple[int, int]] = set()

    def add(i: int, j: int, S: dict[int, Array]) -> None:
        key = (min(i, j), max(i, j))
        if i == j or key in seen or i not in S or j not in S:
            return
        seen.add(key)
        edges.append(PoseGraphEdge(i, j, S[i] @ sim3_inv(S[j])))

    for i, links in new_links.items():
        for j in links:
            add(i, j, S_init)
    for k, kf in slam_map.keyframes.items():
        if kf.bad or k not in S_orig:
            continue
        if kf.parent_id >= 0:
            add(k, kf.parent_id, S_orig)
        for j in kf.loop_edges:
            add(k, j, S_orig)
        for j, w in kf.covisible.items():
            if w >= min_weight:
                add(k, j, S_orig)
    return edges


def _apply_optimised(
    slam_map: Map, S_before: dict[int, Array], S_opt: dict[int, Array]
) -> None:
    """Keyframes take the optimised poses; points follow their reference keyframe."""
    by_ref: dict[int, list[int]] = {}
    for p, mp in slam_map.points.items():
        ref = mp.ref_kf_id
        if ref not in S_opt:
            ref = next((k for k in mp.observations if k in S_opt), -1)
        if ref >= 0:
            by_ref.setdefault(ref, []).append(p)
    for ref, pids in by_ref.items():
        ids = np.asarray(pids, np.int64)
        M = sim3_inv(S_opt[ref]) @ S_before[ref]
        slam_map.store.set("xyz", ids, _apply(M, slam_map.store.get("xyz", ids)))
    for k, S in S_opt.items():
        slam_map.keyframes[k].T_cam_world = sim3_to_se3(S)[0]
    slam_map.update_normals_and_depths(list(slam_map.points))


def correct_loop(slam_map: Map, lm: LoopMatch, p: CorrectionParams) -> dict[int, set[int]]:
    """Correct the map for an accepted loop; returns the new loop links per keyframe.

    The caller keeps local mapping paused; the map lock is held throughout, so
    tracking sees either the old or the corrected map.
    """
    with slam_map.lock:
        cur = slam_map.keyframes[lm.cur_kf_id]
        slam_map.update_connections(cur.id)
        connected = [cur.id] + [k for k in cur.covisible if not slam_map.keyframes[k].bad]
        before = {k: set(slam_map.keyframes[k].covisible) for k in connected}
        S_orig = {kf.id: kf.T_cam_world.copy() for kf in slam_map.good_keyframes()}
        S_corr, _ = _correct_neighbourhood(slam_map, lm, connected)
        _fuse_loop_matches(slam_map, lm)
        for k in connected:
            kf = slam_map.keyframes[k]
            if not kf.bad:
                fuse_into(slam_map, kf, lm.loop_pids, p.K, p.scale_factors, p.bf, radius_th=4.0)
        new_links: dict[int, set[int]] = {}
        for k in connected:
            if slam_map.keyframes[k].bad:
                continue
            slam_map.update_connections(k)
            links = set(slam_map.keyframes[k].covisible) - before[k] - set(connected)
            if links:
                new_links[k] = links
        S_init = {k: S_corr.get(k, S) for k, S in S_orig.items()
                  if not slam_map.keyframes[k].bad}
        edges = _essential_graph_edges(slam_map, S_init, S_orig, new_links, p.min_weight)
        fixed = {lm.loop_kf_id, slam_map.origin_kf_id} & set(S_init)
        S_opt = optimize_essential_graph(S_init, edges, fixed, fix_scale=p.fix_scale,
                                         iterations=p.iterations)
        _apply_optimised(slam_map, S_init, S_opt)
        slam_map.add_loop_edge(lm.cur_kf_id, lm.loop_kf_id)
        slam_map.version += 1
    log.info("loop closed: keyframe %d -> %d (scale %.3f, %d matches, %d edges)",
             lm.cur_kf_id, lm.loop_kf_id, lm.scale, len(lm.matches), len(edges))
    return new_links

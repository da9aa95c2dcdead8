"""Build local bundle-adjustment problems from the map and write results back."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from slam.map.map import Map
from slam.optim.local_ba import BAProblem, problem_with_estimate, solve_local_ba

log = logging.getLogger(__name__)


@dataclass
class LocalProblem:
    """A BA problem and the map ids behind its rows."""

    problem: BAProblem
    kf_ids: list[int]
    pids: list[int]
    obs_kf: NDArray[np.int64]
    obs_pid: NDArray[np.int64]


def build_local_problem(
    slam_map: Map, kf_id: int, K: NDArray[np.float64], bf: float, max_local: int,
    max_fixed: int = 40,
) -> LocalProblem | None:
    """Local keyframes (``kf_id`` and its best covisible), their points, and the
    keyframes that also see those points, held fixed."""
    with slam_map.lock:
        kf = slam_map.keyframes.get(kf_id)
        if kf is None or kf.bad:
            return None
        local = [kf_id] + [k for k in kf.best_covisible(max_local - 1)
                           if not slam_map.keyframes[k].bad]
        return build_problem(slam_map, local, K, bf, max_fixed)


def build_global_problem(slam_map: Map, K: NDArray[np.float64], bf: float) -> LocalProblem | None:
    """Every keyframe and every point (the origin keyframe fixed)."""
    with slam_map.lock:
        return build_problem(slam_map, [kf.id for kf in slam_map.good_keyframes()], K, bf, 0)


def build_problem(
    slam_map: Map, local: list[int], K: NDArray[np.float64], bf: float, max_fixed: int
) -> LocalProblem | None:
    """Optimise keyframes ``local`` and their points; up to ``max_fixed`` other
    keyframes that see those points (most shared first) are held fixed.

    Observations are gathered per keyframe from its ``point_ids`` (the map keeps
    them equal to the points' observation dictionaries), with array operations.
    """
    with slam_map.lock:
        pids = slam_map.point_ids_of(local)  # sorted
        if len(pids) == 0:
            return None
        fixed = _fixed_keyframes(slam_map, local, pids, max_fixed)
        kf_ids = local + fixed
        obs_cam, obs_pt, obs_kf, uv, ur, w = [], [], [], [], [], []
        for c, k in enumerate(kf_ids):
            f = slam_map.keyframes[k].frame
            kp, pos = _observed(f.point_ids, pids)
            obs_cam.append(np.full(len(kp), c, np.int32))
            obs_pt.append(pos.astype(np.int32))
            obs_kf.append(np.full(len(kp), k, np.int64))
            uv.append(f.uv[kp])
            ur.append(f.u_right[kp])
            w.append(f.inv_sigma2[kp])
        T = np.array([slam_map.keyframes[k].T_cam_world for k in kf_ids])
        xyz = slam_map.store.get("xyz", pids)
    o_cam, o_pt = np.concatenate(obs_cam), np.concatenate(obs_pt)
    if len(o_cam) == 0:
        return None
    fixed_cams = np.zeros(len(kf_ids), bool)
    fixed_cams[len(local):] = True
    if slam_map.origin_kf_id in kf_ids:
        fixed_cams[kf_ids.index(slam_map.origin_kf_id)] = True
    if fixed_cams.all():
        return None
    if not fixed_cams.any():
        fixed_cams[len(local) - 1 if len(local) > 1 else 0] = True
    problem = BAProblem(
        T_cam_world=T, fixed_cams=fixed_cams, xyz_world=xyz, obs_cam=o_cam, obs_pt=o_pt,
        obs_uv=np.concatenate(uv), obs_u_right=np.concatenate(ur),
        obs_inv_sigma2=np.concatenate(w), K=K, bf=bf,
    )
    return LocalProblem(problem, kf_ids, pids.tolist(), np.concatenate(obs_kf), pids[o_pt])


def _observed(
    point_ids: NDArray[np.int64], pids_sorted: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Keypoints of a keyframe that observe one of ``pids_sorted``, and the index of
    that point in ``pids_sorted``."""
    kp = np.flatnonzero(point_ids >= 0)
    pos = np.searchsorted(pids_sorted, point_ids[kp])
    pos_c = np.minimum(pos, len(pids_sorted) - 1)
    hit = pids_sorted[pos_c] == point_ids[kp]
    return kp[hit], pos_c[hit]


def _fixed_keyframes(
    slam_map: Map, local: list[int], pids: NDArray[np.int64], max_fixed: int
) -> list[int]:
    """Keyframes outside ``local`` that see the most of ``pids`` (at most ``max_fixed``;
    of equals, the newer first), found from the points' observations: the cost follows
    the local map, not the whole map."""
    if max_fixed <= 0:
        return []
    _, obs_kf, _ = slam_map.store.observations(pids)
    kf_ids, counts = np.unique(obs_kf[~np.isin(obs_kf, local)], return_counts=True)
    good = np.array([not slam_map.keyframes[k].bad for k in kf_ids.tolist()], bool)
    kf_ids, counts = kf_ids[good], counts[good]
    order = np.lexsort((-kf_ids, -counts))[:max_fixed]
    return kf_ids[order].tolist()


def run_local_ba(
    slam_map: Map, lp: LocalProblem, abort_flag: NDArray[np.int32], iterations: int
) -> bool:
    """ORB-SLAM's two passes: robust, then without outliers; write back unless aborted."""
    res = solve_local_ba(lp.problem, iterations=max(iterations // 2, 1), huber=True,
                         abort_flag=abort_flag)
    if res.aborted:
        return False
    res2 = solve_local_ba(problem_with_estimate(lp.problem, res), iterations=iterations,
                          huber=False, abort_flag=abort_flag, exclude_obs=~res.inlier_obs)
    if not res2.aborted:
        res = res2
    _write_back(slam_map, lp, res.T_cam_world, res.xyz_world, res.inlier_obs)
    log.debug("local BA: %d kf, %d points, cost %.1f -> %.1f", len(lp.kf_ids), len(lp.pids),
              res.initial_cost, res.final_cost)
    return True


def global_bundle_adjustment(
    slam_map: Map, K: NDArray[np.float64], bf: float, iterations: int
) -> bool:
    """Bundle adjustment of the whole map (origin fixed); False when there is nothing to do."""
    lp = build_global_problem(slam_map, K, bf)
    if lp is None:
        return False
    return run_local_ba(slam_map, lp, np.zeros(1, np.int32), iterations)


def _write_back(
    slam_map: Map, lp: LocalProblem, T: NDArray[np.float64], xyz: NDArray[np.float64],
    inliers: NDArray[np.bool_],
) -> None:
    fixed = lp.problem.fixed_cams
    with slam_map.lock:
        for o in np.flatnonzero(~inliers):
            slam_map.erase_observation(int(lp.obs_pid[o]), int(lp.obs_kf[o]))
        for i, k in enumerate(lp.kf_ids):
            kf = slam_map.keyframes.get(k)
            if kf is not None and not kf.bad and not fixed[i]:
                kf.T_cam_world = T[i].copy()
        ids = np.asarray(lp.pids, np.int64)
        alive = slam_map.store.alive_mask(ids)
        slam_map.store.set("xyz", ids[alive], xyz[alive])
        slam_map.update_normals_and_depths(ids[alive].tolist())

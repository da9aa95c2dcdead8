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
    keyframes that see those points (most shared first) are held fixed."""
    with slam_map.lock:
        pids = slam_map.points_of(local)
        local_set = set(local)
        fixed_count: dict[int, int] = {}
        for p in pids:
            for k in slam_map.points[p].observations:
                if k not in local_set:
                    fixed_count[k] = fixed_count.get(k, 0) + 1
        fixed = sorted(fixed_count, key=lambda k: -fixed_count[k])[:max_fixed]
        kf_ids = local + fixed
        cam_index = {k: i for i, k in enumerate(kf_ids)}
        obs_cam, obs_pt, obs_kp, obs_kfid = [], [], [], []
        for j, p in enumerate(pids):
            for k, i in slam_map.points[p].observations.items():
                c = cam_index.get(k)
                if c is not None:
                    obs_cam.append(c)
                    obs_pt.append(j)
                    obs_kp.append(i)
                    obs_kfid.append(k)
        if not obs_cam:
            return None
        T = np.array([slam_map.keyframes[k].T_cam_world for k in kf_ids])
        xyz = np.array([slam_map.points[p].xyz_world for p in pids])
        uv = np.empty((len(obs_cam), 2))
        ur = np.empty(len(obs_cam))
        w = np.empty(len(obs_cam))
        for o, (k, i) in enumerate(zip(obs_kfid, obs_kp)):
            f = slam_map.keyframes[k].frame
            uv[o] = f.uv[i]
            ur[o] = f.u_right[i]
            w[o] = f.inv_sigma2[i]
    fixed_cams = np.zeros(len(kf_ids), bool)
    fixed_cams[len(local):] = True
    if slam_map.origin_kf_id in cam_index:
        fixed_cams[cam_index[slam_map.origin_kf_id]] = True
    if fixed_cams.all():
        return None
    if not fixed_cams.any():
        fixed_cams[len(local) - 1 if len(local) > 1 else 0] = True
    problem = BAProblem(
        T_cam_world=T, fixed_cams=fixed_cams, xyz_world=xyz,
        obs_cam=np.array(obs_cam, np.int32), obs_pt=np.array(obs_pt, np.int32),
        obs_uv=uv, obs_u_right=ur, obs_inv_sigma2=w, K=K, bf=bf,
    )
    return LocalProblem(problem, kf_ids, pids, np.array(obs_kfid, np.int64),
                        np.asarray(pids, np.int64)[obs_pt])


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
        alive = slam_map.store.alive[ids]
        slam_map.store.xyz[ids[alive]] = xyz[alive]
        slam_map.update_normals_and_depths(ids[alive].tolist())

"""Local BA problems from the map, and BA runs that must bring perturbed estimates back."""

from __future__ import annotations

import numpy as np
import pytest

from slam.geometry.lie import se3_exp, se3_inv, se3_log
from slam.map.keyframe import KeyFrame
from slam.map.map import Map
from slam.mapping.bundle import _fixed_keyframes, build_local_problem, run_local_ba
from slam.tracking.initializer import add_depth_points
from slam.tracking.projection import match_projected, project_into
from tests.map.factories import (
    BF_SMALL,
    H_SMALL,
    K_SMALL,
    N_LEVELS,
    SCALE_FACTOR,
    SCALES,
    W_SMALL,
    make_frame,
    make_keyframe,
    map_with_keyframes,
    project,
    share_points,
    synthetic_frame,
)

N_PTS = 300
KF_X = [0.0, 0.3, 0.6, 0.9, 1.2]


def _T(x: float) -> np.ndarray:
    """T_cam_world of a camera at (x, 0, 0) looking along world +z."""
    T = np.eye(4)
    T[0, 3] = -x
    return T


class _Scene:
    """Five keyframes in a row; each sees the points that fall in its image, exactly."""

    def __init__(self, stereo: bool = True, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.xyz = rng.uniform([-1.2, -0.8, 1.8], [2.4, 0.8, 2.6], size=(N_PTS, 3))
        self.m = Map(SCALE_FACTOR, N_LEVELS)
        self.kfs: list[KeyFrame] = []
        self.T_gt = [_T(x) for x in KF_X]
        vis = []
        for T in self.T_gt:
            uv, z = project(K_SMALL, T, self.xyz)
            ur = uv[:, 0] - BF_SMALL / z if stereo else None
            self.kfs.append(make_keyframe(self.m, make_frame(uv, u_right=ur, rng=rng), T))
            vis.append((uv[:, 0] >= 0) & (uv[:, 0] < W_SMALL) & (uv[:, 1] >= 0)
                       & (uv[:, 1] < H_SMALL))
        self.pids = []
        for i in range(N_PTS):
            seen = [k for k in range(5) if vis[k][i]]
            if len(seen) < 2:
                self.pids.append(-1)
                continue
            pid = self.m.add_point(self.xyz[i], self.kfs[seen[0]], i).id
            for k in seen[1:]:
                self.m.add_observation(pid, self.kfs[k].id, i)
            self.pids.append(pid)
        self.m.update_normals_and_depths(list(self.m.points))
        for kf in self.kfs:
            self.m.update_connections(kf.id)

    def point_errors(self) -> np.ndarray:
        idx = [i for i, p in enumerate(self.pids) if p in self.m.points]
        xyz = self.m.point_arrays([self.pids[i] for i in idx]).xyz_world
        return np.asarray(np.linalg.norm(xyz - self.xyz[idx], axis=1))

    def pose_errors(self) -> np.ndarray:
        return np.array([np.linalg.norm(se3_log(kf.T_cam_world @ se3_inv(T)))
                         for kf, T in zip(self.kfs, self.T_gt)])

    def perturb(self, kf_ids: list[int], rng: np.random.Generator) -> None:
        for k in kf_ids:
            twist = np.r_[rng.normal(0, 0.03, 3), rng.normal(0, 0.01, 3)]
            self.kfs[k].T_cam_world = se3_exp(twist) @ self.kfs[k].T_cam_world
        for p in self.m.points.values():
            p.xyz_world = p.xyz_world + rng.normal(0, 0.05, 3)


@pytest.fixture
def scene() -> _Scene:
    return _Scene()


def test_local_problem_cameras_and_observations(scene: _Scene) -> None:
    lp = build_local_problem(scene.m, 4, K_SMALL, BF_SMALL, max_local=3)
    assert lp is not None
    assert scene.kfs[4].best_covisible(2) == [3, 2]
    assert lp.kf_ids[:3] == [4, 3, 2] and sorted(lp.kf_ids[3:]) == [0, 1]
    assert lp.problem.fixed_cams.tolist() == [False, False, False, True, True]
    assert sorted(lp.pids) == sorted(scene.m.points_of([4, 3, 2]))
    # Every observation of those points by any of the five keyframes is a row.
    n_obs = sum(len(scene.m.points[p].observations) for p in lp.pids)
    assert lp.problem.n_obs == n_obs == len(lp.obs_kf) == len(lp.obs_pid)
    pr = lp.problem
    for o in range(pr.n_obs):
        k = lp.kf_ids[pr.obs_cam[o]]
        assert lp.obs_kf[o] == k and lp.obs_pid[o] == lp.pids[pr.obs_pt[o]]
        i = scene.m.points[lp.obs_pid[o]].observations[k]
        np.testing.assert_array_equal(pr.obs_uv[o], scene.kfs[k].frame.uv[i])
        assert pr.obs_u_right[o] == scene.kfs[k].frame.u_right[i]
    np.testing.assert_array_equal(pr.T_cam_world[1], scene.kfs[3].T_cam_world)
    np.testing.assert_array_equal(pr.xyz_world, scene.m.point_arrays(lp.pids).xyz_world)
    assert pr.bf == BF_SMALL and np.all(pr.obs_inv_sigma2 == 1.0)


def test_local_problem_fixed_limit_and_origin(scene: _Scene) -> None:
    lp = build_local_problem(scene.m, 4, K_SMALL, BF_SMALL, max_local=3, max_fixed=1)
    assert lp is not None and lp.kf_ids == [4, 3, 2, 1]
    assert 0 not in set(lp.obs_kf.tolist())
    # With the origin among the local keyframes, it is held fixed.
    lp = build_local_problem(scene.m, 1, K_SMALL, BF_SMALL, max_local=3)
    assert lp is not None and 0 in lp.kf_ids[:3]
    fixed = {k for k, f in zip(lp.kf_ids, lp.problem.fixed_cams) if f}
    assert fixed == {0} | set(lp.kf_ids[3:])
    assert build_local_problem(scene.m, 99, K_SMALL, BF_SMALL, 3) is None


@pytest.mark.parametrize("stereo", [True, False])
def test_local_ba_recovers_perturbed_poses_and_points(stereo: bool) -> None:
    sc = _Scene(stereo=stereo)
    rng = np.random.default_rng(1)
    sc.perturb([2, 3, 4], rng)
    fixed_before = [sc.kfs[k].T_cam_world.copy() for k in (0, 1)]
    assert sc.pose_errors()[2:].min() > 0.01 and np.median(sc.point_errors()) > 0.05
    lp = build_local_problem(sc.m, 4, K_SMALL, BF_SMALL if stereo else 0.0, max_local=3)
    assert lp is not None
    assert run_local_ba(sc.m, lp, np.zeros(1, np.int32), iterations=10)
    for k in (0, 1):
        np.testing.assert_array_equal(sc.kfs[k].T_cam_world, fixed_before[k])
    assert sc.pose_errors().max() < 1e-4
    local_pts = [i for i, p in enumerate(sc.pids) if p in set(lp.pids)]
    xyz = sc.m.point_arrays([sc.pids[i] for i in local_pts]).xyz_world
    assert np.abs(xyz - sc.xyz[local_pts]).max() < 1e-3
    assert sc.m.n_points() == len([p for p in sc.pids if p >= 0])  # no outliers here


def test_local_ba_erases_outlier_observations(scene: _Scene) -> None:
    pid = scene.pids[next(i for i, p in enumerate(scene.pids)
                          if p >= 0 and {2, 3, 4} <= set(scene.m.points[p].observations))]
    i3 = scene.m.points[pid].observations[3]
    scene.kfs[3].frame.uv[i3] += [25.0, -20.0]
    lp = build_local_problem(scene.m, 4, K_SMALL, BF_SMALL, max_local=3)
    assert lp is not None
    assert run_local_ba(scene.m, lp, np.zeros(1, np.int32), iterations=10)
    assert 3 not in scene.m.points[pid].observations and scene.kfs[3].point_ids[i3] == -1
    assert pid in scene.m.points
    assert scene.pose_errors().max() < 1e-3


def test_local_ba_abort_leaves_map_alone(scene: _Scene) -> None:
    rng = np.random.default_rng(2)
    scene.perturb([3, 4], rng)
    poses = [kf.T_cam_world.copy() for kf in scene.kfs]
    xyz = scene.m.point_arrays(list(scene.m.points)).xyz_world.copy()
    lp = build_local_problem(scene.m, 4, K_SMALL, BF_SMALL, max_local=3)
    assert lp is not None
    assert not run_local_ba(scene.m, lp, np.ones(1, np.int32), iterations=10)
    for kf, T in zip(scene.kfs, poses):
        np.testing.assert_array_equal(kf.T_cam_world, T)
    np.testing.assert_array_equal(scene.m.point_arrays(list(scene.m.points)).xyz_world, xyz)


def test_local_ba_on_rendered_rgbd_keyframes() -> None:
    """Keyframes 3, 4, 5 of the loop with features from the renderer; 3 is the origin."""
    m = Map(SCALE_FACTOR, N_LEVELS)
    kfs = []
    for i in (3, 4, 5):
        f = synthetic_frame("rgbd", i)
        assert f.T_cam_world is not None
        kfs.append(make_keyframe(m, f, f.T_cam_world))
    add_depth_points(m, kfs[0], K_SMALL, max_close_depth=10.0)
    pids = np.array(list(m.points))
    pts = m.point_arrays(pids)
    for kf in kfs[1:]:
        proj = project_into(kf.frame, kf.T_cam_world, K_SMALL, pts.xyz_world, pts.normals,
                            pts.min_dist, pts.max_dist, SCALE_FACTOR, N_LEVELS)
        sel, kp = match_projected(kf.frame, proj, pts.descriptors,
                                  3.0 * SCALES[proj.level], 50, 0.8)
        for s, j in zip(sel, kp):
            m.add_observation(int(pts.ids[s]), kf.id, int(j))
        assert len(sel) > 100
    m.update_normals_and_depths(list(m.points))
    for kf in kfs:
        m.update_connections(kf.id)
    gt = [kf.T_cam_world.copy() for kf in kfs]
    rng = np.random.default_rng(3)
    for kf in kfs[1:]:
        kf.T_cam_world = se3_exp(np.r_[rng.normal(0, 0.03, 3), rng.normal(0, 0.02, 3)]) \
            @ kf.T_cam_world
    before = [np.linalg.norm(se3_log(kf.T_cam_world @ se3_inv(T))) for kf, T in zip(kfs, gt)]
    lp = build_local_problem(m, kfs[2].id, K_SMALL, BF_SMALL, max_local=3)
    assert lp is not None and sorted(lp.kf_ids) == [0, 1, 2]
    assert [k for k, f in zip(lp.kf_ids, lp.problem.fixed_cams) if f] == [kfs[0].id]
    assert run_local_ba(m, lp, np.zeros(1, np.int32), iterations=10)
    np.testing.assert_array_equal(kfs[0].T_cam_world, gt[0])
    for kf, T, b in zip(kfs[1:], gt[1:], before[1:]):
        dT = kf.T_cam_world @ se3_inv(T)
        assert np.linalg.norm(dT[:3, 3]) < 0.005
        assert np.linalg.norm(se3_log(dT)[3:]) < np.radians(0.2)
        assert b > 0.02


def test_fixed_keyframes_are_those_seeing_most_of_the_points() -> None:
    """From the points' observations, the same keyframes and order as counting each
    keyframe's keypoints (more shared first, the newer of equals first); culled and
    local keyframes are never fixed."""
    m, kfs = map_with_keyframes(9, seed=4)
    rng = np.random.default_rng(4)
    for i in range(60):
        seen_by = rng.choice(9, int(rng.integers(1, 6)), replace=False)
        share_points(m, [kfs[k] for k in seen_by], 1, start=i)
    m.erase_keyframe(kfs[5].id)
    local = [kfs[1].id, kfs[2].id]
    pids = m.point_ids_of(local)
    counts = []
    for kf in m.good_keyframes():
        n = int(np.count_nonzero(np.isin(kf.point_ids, pids)))
        if kf.id not in local and n > 0:
            counts.append((n, kf.id))
    want = [k for _, k in sorted(counts, reverse=True)]
    assert len(want) > 3
    for limit in (2, 3, 40):
        assert _fixed_keyframes(m, local, pids, limit) == want[:limit]
    assert _fixed_keyframes(m, local, pids, 0) == []

"""Recent map point culling and redundant keyframe culling on hand-made maps."""

from __future__ import annotations

import numpy as np

from slam.map.keyframe import KeyFrame
from slam.map.map import Map
from slam.mapping.culling import _redundant, cull_keyframes, cull_recent_points
from tests.map.factories import make_frame, make_keyframe

N_KP = 60


def _map(n_kf: int) -> tuple[Map, list[KeyFrame]]:
    m = Map()
    rng = np.random.default_rng(0)
    kfs = []
    for k in range(n_kf):
        T = np.eye(4)
        T[0, 3] = -0.1 * k
        uv = rng.uniform([0, 0], [320, 240], size=(N_KP, 2))
        kfs.append(make_keyframe(m, make_frame(uv, frame_id=k, depth_m=np.full(N_KP, 2.0),
                                               rng=rng), T))
    return m, kfs


def _point(m: Map, kfs: list[KeyFrame], idx: int, levels: list[int] | None = None) -> int:
    """A point seen by ``kfs`` at keypoint ``idx`` (at the given octaves)."""
    for k, kf in enumerate(kfs):
        kf.frame.octave[idx] = 0 if levels is None else levels[k]
    pid = m.add_point(np.array([0.0, 0.0, 2.0]), kfs[0], idx).id
    for kf in kfs[1:]:
        m.add_observation(pid, kf.id, idx)
    return pid


def test_cull_recent_points() -> None:
    m, kfs = _map(5)
    low_ratio = _point(m, kfs[3:5], 0)  # young, but matched in 2 of 10 frames: 0.2 < 0.25
    m.points[low_ratio].n_visible, m.points[low_ratio].n_found = 10, 2
    ok_ratio = _point(m, kfs[3:5], 1)
    m.points[ok_ratio].n_visible, m.points[ok_ratio].n_found = 8, 2  # 0.25: kept
    few_old = _point(m, kfs[2:4], 2)  # first seen in kf2, now kf4: age 2, 2 views < 3
    few_young = _point(m, kfs[3:5], 3)  # age 1: still on probation
    seasoned = _point(m, kfs[1:5], 4)  # age 3 with 4 views: leaves probation, stays in map
    gone = _point(m, kfs[3:5], 5)
    m.erase_point(gone)
    recent = [low_ratio, ok_ratio, few_old, few_young, seasoned, gone]
    still = cull_recent_points(m, recent, current_kf_id=4, min_obs=3, found_ratio=0.25)
    assert low_ratio not in m.points and few_old not in m.points
    assert kfs[3].point_ids[0] == -1 and kfs[3].point_ids[2] == -1
    assert still == [ok_ratio, few_young]
    assert {ok_ratio, few_young, seasoned} <= set(m.points)


def test_cull_recent_points_keeps_stereo_pairs() -> None:
    m, kfs = _map(4)
    pid = _point(m, kfs[1:3], 0)  # age 2 with two views
    assert cull_recent_points(m, [pid], 3, min_obs=2, found_ratio=0.25) == [pid]
    assert cull_recent_points(m, [pid], 4, min_obs=2, found_ratio=0.25) == []
    assert pid in m.points


def _redundancy_map() -> tuple[Map, list[KeyFrame]]:
    """kf0 (origin) .. kf5. Points 0-19 are seen by kf0-kf4 at level 0; points 20-39 by kf5
    (level 0), kf4 (level 1) and kf1-kf3 (level 3); kf2-kf4 have 20 points of their own.
    So kf1 is redundant; kf5's points are seen by only one other keyframe at a fine enough
    level; kf2-kf4 have a third of their points to themselves."""
    m, kfs = _map(6)
    for i in range(20):
        _point(m, [kfs[1], kfs[0], kfs[2], kfs[3], kfs[4]], i)
    for i in range(20, 40):
        _point(m, [kfs[5], kfs[4], kfs[1], kfs[2], kfs[3]], i, levels=[0, 1, 3, 3, 3])
    for k in (2, 3, 4):
        for i in range(40, 60):
            _point(m, [kfs[k]], i)
    for kf in kfs:
        m.update_connections(kf.id)
    return m, kfs


def test_cull_keyframes_erases_redundant_ones() -> None:
    m, kfs = _redundancy_map()
    erased = cull_keyframes(m, kfs[4].id, redundant_ratio=0.9, max_close_depth=None)
    assert erased == [1] and kfs[1].bad
    assert not kfs[0].bad  # the origin is never culled, though all its points are shared
    for kf in m.good_keyframes():
        assert kf.id == 0 or not m.keyframes[kf.parent_id].bad
    assert all(1 not in m.points[p].observations for p in m.points)


def test_cull_keyframes_ratio_and_depth_filter() -> None:
    m, kfs = _redundancy_map()
    # kf1 gets 5 points of its own: 40 of 45 redundant (0.89) is not > 0.9.
    for i in range(40, 45):
        _point(m, [kfs[1]], i)
    assert 1 not in cull_keyframes(m, kfs[4].id, 0.9, None)
    # Only close points count: with the own points far away, kf1 is redundant again.
    kfs[1].frame.depth_m[40:45] = 50.0
    assert 1 in cull_keyframes(m, kfs[4].id, 0.9, max_close_depth=10.0)


def test_cull_keyframes_unknown_id() -> None:
    m, _ = _redundancy_map()
    assert cull_keyframes(m, 99, 0.9, None) == []


def _redundant_by_objects(m: Map, kf: KeyFrame, ratio: float) -> bool:
    """ORB-SLAM's KeyFrameCulling rule, over each point's observations one by one."""
    n_points = n_redundant = 0
    for i, pid in enumerate(kf.point_ids.tolist()):
        mp = m.points.get(pid) if pid >= 0 else None
        if mp is None:
            continue
        n_points += 1
        level = int(kf.frame.octave[i]) + 1
        seen = sum(1 for k, j in mp.observations.items()
                   if k != kf.id and m.keyframes[k].frame.octave[j] <= level)
        n_redundant += seen >= 3
    return n_points > 0 and n_redundant > ratio * n_points


def test_redundancy_counted_by_level_matches_the_rule_over_observations() -> None:
    """Random keypoint levels and observations, then fusions, erasures and a culled
    keyframe: the store's counts by level give each keyframe the verdict that visiting
    every observation gives."""
    rng = np.random.default_rng(4)
    m, kfs = _map(8)
    for kf in kfs:
        kf.frame.octave[:] = rng.integers(0, 8, N_KP)
    pids = []
    for i in range(N_KP):
        seen_by = rng.choice(8, int(rng.integers(1, 8)), replace=False)
        pid = m.add_point(np.array([0.0, 0.0, 2.0]), kfs[seen_by[0]], i).id
        for k in seen_by[1:]:
            m.add_observation(pid, kfs[k].id, i)
        pids.append(pid)
    m.replace_point(pids[3], pids[4])
    m.erase_observation(pids[5], next(iter(m.points[pids[5]].observations)))
    m.erase_keyframe(kfs[6].id)
    verdicts = []
    for ratio in (0.3, 0.5, 0.7):
        for kf in m.good_keyframes():
            want = _redundant_by_objects(m, kf, ratio)
            assert _redundant(m, kf, None, ratio) == want, (kf.id, ratio)
            verdicts.append(want)
    assert any(verdicts) and not all(verdicts)  # the case tells the rule apart

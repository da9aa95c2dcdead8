"""Map invariants: observations, point erasure and fusion, covisibility, spanning tree."""

from __future__ import annotations

import numpy as np
import pytest

from slam.geometry.lie import make_pose, so3_exp
from slam.map.frame import Frame
from slam.map.keyframe import KeyFrame
from slam.map.map import COVISIBILITY_MIN_SHARED, Map
from tests.map.factories import (
    K_SMALL,
    N_LEVELS,
    SCALE_FACTOR,
    make_frame,
    map_with_keyframes,
    share_points,
)


def _check_consistent(m: Map) -> None:
    """Observation dicts and keyframe point_ids agree both ways."""
    for pid, mp in m.points.items():
        assert not mp.bad and mp.observations
        for kid, idx in mp.observations.items():
            assert m.keyframes[kid].point_ids[idx] == pid
    for kf in m.keyframes.values():
        if kf.bad:
            continue
        for i in np.flatnonzero(kf.point_ids >= 0):
            pid = int(kf.point_ids[i])
            assert pid in m.points, (kf.id, i, pid)
            assert m.points[pid].observations.get(kf.id) == i


def _check_tree(m: Map) -> None:
    """Every good non-origin keyframe hangs (through good parents) from the origin."""
    for kf in m.good_keyframes():
        assert kf.id not in kf.children
        for c in kf.children:
            assert m.keyframes[c].parent_id == kf.id
        if kf.id == m.origin_kf_id:
            continue
        parent = m.keyframes[kf.parent_id]
        assert not parent.bad and kf.id in parent.children
        seen, k = set(), kf
        while k.id != m.origin_kf_id:
            assert k.id not in seen
            seen.add(k.id)
            k = m.keyframes[k.parent_id]


# --- frames, keyframes, points -----------------------------------------------------------
def test_frame_defaults_grid_and_pose() -> None:
    f = make_frame(np.array([[1.0, 2.0], [300.0, 200.0]]), depth_m=np.array([2.0, -1.0]))
    assert f.point_ids.tolist() == [-1, -1] and f.outlier.tolist() == [False, False]
    assert f.has_depth().tolist() == [True, False] and len(f) == 2
    assert f.grid is f.grid and f.grid.start[-1] == 2
    T = make_pose(so3_exp(np.array([0.1, -0.2, 0.3])), np.array([1.0, 2.0, 3.0]))
    f.T_cam_world = T
    np.testing.assert_allclose(f.T_world_cam, np.linalg.inv(T), atol=1e-12)
    np.testing.assert_allclose(f.center_world, np.linalg.inv(T)[:3, 3], atol=1e-12)


def test_keyframe_pose_and_covisible_order() -> None:
    T = make_pose(so3_exp(np.array([0.3, 0.1, -0.2])), np.array([0.5, -1.0, 2.0]))
    kf = KeyFrame(id=0, frame=make_frame(np.zeros((1, 2))), T_cam_world=T)
    np.testing.assert_allclose(kf.T_world_cam, np.linalg.inv(T), atol=1e-12)
    np.testing.assert_allclose(kf.center_world, np.linalg.inv(T)[:3, 3], atol=1e-12)
    kf.ordered_covisible = [4, 2, 9]
    assert kf.best_covisible(2) == [4, 2] and kf.best_covisible(10) == [4, 2, 9]


def test_ids_and_origin() -> None:
    m, kfs = map_with_keyframes(3)
    assert [kf.id for kf in kfs] == [0, 1, 2]
    assert m.origin_kf_id == 0 and m.n_keyframes() == 3


def test_add_point_sets_observation_normal_and_scale_range() -> None:
    m, kfs = map_with_keyframes(2)
    kf = kfs[1]
    kf.frame.octave[7] = 2
    xyz = np.array([0.4, 0.3, 2.0])
    mp = m.add_point(xyz, kf, 7)
    m.update_normal_and_depth(mp.id)
    assert mp.observations == {kf.id: 7} and kf.point_ids[7] == mp.id
    np.testing.assert_array_equal(mp.descriptor, kf.frame.descriptors[7])
    ray = xyz - kf.center_world
    dist = float(np.linalg.norm(ray))
    np.testing.assert_allclose(mp.normal, ray / dist, atol=1e-12)
    assert mp.max_dist == pytest.approx(dist * SCALE_FACTOR**2)
    assert mp.min_dist == pytest.approx(mp.max_dist / SCALE_FACTOR ** (N_LEVELS - 1))
    # A camera at the keypoint's own distance predicts the keypoint's level.
    assert mp.predict_level(dist * 1.001, SCALE_FACTOR, N_LEVELS) == 2
    assert mp.predict_level(mp.max_dist * 1.01, SCALE_FACTOR, N_LEVELS) == 0
    assert mp.predict_level(1e-3, SCALE_FACTOR, N_LEVELS) == N_LEVELS - 1


def test_normal_is_mean_viewing_direction() -> None:
    m, kfs = map_with_keyframes(3)
    xyz = np.array([0.1, 0.0, 3.0])
    mp = m.add_point(xyz, kfs[0], 0)
    m.add_observation(mp.id, kfs[2].id, 5)
    m.update_normal_and_depth(mp.id)
    rays = [xyz - kfs[k].center_world for k in (0, 2)]
    mean = sum(r / np.linalg.norm(r) for r in rays)
    np.testing.assert_allclose(mp.normal, mean / np.linalg.norm(mean), atol=1e-12)


def test_point_arrays_and_points_of() -> None:
    m, kfs = map_with_keyframes(3)
    a = share_points(m, kfs[:2], 3, start=0)
    b = share_points(m, kfs[1:], 2, start=10)
    assert sorted(m.points_of([kfs[0].id])) == a
    assert sorted(m.points_of([kfs[0].id, kfs[2].id])) == sorted(a + b)
    m.erase_point(a[1])
    arr = m.point_arrays([a[0], a[1], b[1]])
    assert arr.ids.tolist() == [a[0], b[1]] and len(arr) == 2
    np.testing.assert_array_equal(arr.xyz_world[1], m.points[b[1]].xyz_world)
    np.testing.assert_array_equal(arr.descriptors[0], m.points[a[0]].descriptor)
    assert arr.normals.shape == (2, 3) and arr.max_dist.shape == (2,)
    assert len(m.point_arrays([])) == 0 and m.point_arrays([]).xyz_world.shape == (0, 3)
    assert a[1] not in m.points_of([kfs[0].id])


# --- erasure and fusion ------------------------------------------------------------------
def test_erase_observation_keeps_dicts_consistent() -> None:
    m, kfs = map_with_keyframes(3)
    pids = share_points(m, kfs, 5)
    m.erase_observation(pids[0], kfs[0].id)
    assert kfs[0].id not in m.points[pids[0]].observations and kfs[0].point_ids[0] == -1
    assert m.points[pids[0]].ref_kf_id != kfs[0].id
    m.erase_observation(pids[0], kfs[0].id)  # twice: no effect
    m.erase_observation(pids[1], kfs[2].id)
    _check_consistent(m)


def test_erase_last_observation_erases_point() -> None:
    m, kfs = map_with_keyframes(2)
    mp = m.add_point(np.array([0.0, 0.0, 3.0]), kfs[0], 4)
    m.erase_observation(mp.id, kfs[0].id)
    assert mp.id not in m.points and mp.bad and m.get_point(mp.id) is None
    assert kfs[0].point_ids[4] == -1
    _check_consistent(m)


def test_erase_observation_keeps_point_left_with_one_view() -> None:
    m, kfs = map_with_keyframes(2)
    pid = share_points(m, kfs, 1)[0]
    m.erase_observation(pid, kfs[0].id)
    assert pid in m.points and m.points[pid].observations == {kfs[1].id: 0}
    assert kfs[0].point_ids[0] == -1 and kfs[1].point_ids[0] == pid
    _check_consistent(m)


def test_erase_point_detaches_from_every_keyframe() -> None:
    m, kfs = map_with_keyframes(3)
    pids = share_points(m, kfs, 4)
    version = m.version
    m.erase_point(pids[2])
    assert pids[2] not in m.points and m.n_points() == 3 and m.version > version
    assert all(kf.point_ids[2] == -1 for kf in kfs)
    m.erase_point(pids[2])  # twice: no effect
    _check_consistent(m)


def test_replace_point_moves_observations() -> None:
    m, kfs = map_with_keyframes(4)
    old = m.add_point(np.array([0.0, 0.0, 3.0]), kfs[0], 1)
    m.add_observation(old.id, kfs[1].id, 2)
    new = m.add_point(np.array([0.0, 0.01, 3.0]), kfs[1], 3)
    m.add_observation(new.id, kfs[2].id, 4)
    old.n_visible, old.n_found = 5, 2
    new.n_visible, new.n_found = 4, 3
    m.replace_point(old.id, new.id)
    assert old.id not in m.points and old.bad and old.replaced_by == new.id
    # kf0 moves over; kf1 saw both (at different keypoints): the old one's slot is freed.
    assert new.observations == {kfs[1].id: 3, kfs[2].id: 4, kfs[0].id: 1}
    assert kfs[0].point_ids[1] == new.id and kfs[1].point_ids[2] == -1
    assert (new.n_visible, new.n_found) == (9, 5)
    _check_consistent(m)
    m.replace_point(new.id, new.id)
    assert new.id in m.points


# --- covisibility ------------------------------------------------------------------------
def _covisibility_map() -> tuple[Map, list[KeyFrame]]:
    """kf0-kf1 share 20 points, kf1-kf2 share 16 (+2 seen by all three), kf0-kf2 only those 2,
    kf3 shares 5 with kf2."""
    m, kfs = map_with_keyframes(4)
    share_points(m, kfs[:2], 18, start=0)
    share_points(m, kfs[:3], 2, start=18)
    share_points(m, kfs[1:3], 14, start=20)
    share_points(m, kfs[2:4], 5, start=40)
    for kf in kfs:
        m.update_connections(kf.id)
    return m, kfs


def test_covisibility_weights_are_shared_counts_and_symmetric() -> None:
    m, kfs = _covisibility_map()
    assert kfs[0].covisible == {1: 20}
    assert kfs[1].covisible == {0: 20, 2: 16}
    assert kfs[2].covisible == {1: 16, 3: 5}  # kf3's fallback link is added to kf2
    assert kfs[1].ordered_covisible == [0, 2]
    # Above the threshold, the graph is symmetric and weights equal shared point counts.
    for a in kfs:
        for b, w in a.covisible.items():
            if w >= COVISIBILITY_MIN_SHARED:
                assert kfs[b].covisible[a.id] == w
                shared = set(m.points_of([a.id])) & set(m.points_of([b]))
                assert len(shared) == w
    # kf3 shares fewer than 15 with anyone: it links to its best neighbour only.
    assert kfs[3].covisible == {2: 5}


def test_spanning_tree_parents_are_best_covisible() -> None:
    m, kfs = _covisibility_map()
    assert kfs[0].parent_id == -1
    assert (kfs[1].parent_id, kfs[2].parent_id, kfs[3].parent_id) == (0, 1, 2)
    assert kfs[0].children == {1} and kfs[1].children == {2} and kfs[2].children == {3}
    _check_tree(m)


def test_origin_keyframe_cannot_be_erased() -> None:
    m, kfs = _covisibility_map()
    n_points = m.n_points()
    m.erase_keyframe(kfs[0].id)
    assert not kfs[0].bad and m.n_points() == n_points and kfs[1].covisible[0] == 20


def test_erase_keyframe_reparents_children_and_drops_observations() -> None:
    m, kfs = _covisibility_map()
    # kf3 also shares 15 points with kf1, so it may hang from kf1 once kf2 is gone.
    share_points(m, [kfs[1], kfs[3]], 15, start=60)
    m.update_connections(kfs[3].id)
    only_kf2 = m.add_point(np.array([0.0, 0.0, 4.0]), kfs[2], 90).id
    m.erase_keyframe(kfs[2].id)
    assert kfs[2].bad and m.n_keyframes() == 3
    assert only_kf2 not in m.points
    assert all(kfs[2].id not in kf.covisible for kf in m.good_keyframes())
    assert kfs[3].parent_id == 1 and 3 in kfs[1].children and 2 not in kfs[1].children
    _check_tree(m)
    _check_consistent(m)
    # The culled keyframe keeps its pose relative to its parent: T_cam_parent @ T_parent_world.
    assert kfs[2].T_cam_parent is not None
    np.testing.assert_allclose(kfs[2].T_cam_parent @ kfs[1].T_cam_world, kfs[2].T_cam_world,
                               atol=1e-12)
    m.erase_keyframe(kfs[2].id)  # twice: no effect


def test_erase_chain_keeps_a_tree() -> None:
    m, kfs = map_with_keyframes(6, seed=4)
    for a in range(5):  # a chain: keyframes a and a + 1 share 20 points
        share_points(m, kfs[a:a + 2], 20, start=20 * a)
    for kf in kfs:
        m.update_connections(kf.id)
    _check_tree(m)
    for k in (2, 4, 1):
        m.erase_keyframe(k)
        _check_tree(m)
        _check_consistent(m)
    assert [kf.id for kf in m.good_keyframes()] == [0, 3, 5]


def _culled_chain() -> tuple[Map, list[KeyFrame], dict[int, np.ndarray]]:
    """A chain of 6 keyframes with 2, 4 and 1 culled; their poses before culling."""
    m, kfs = map_with_keyframes(6, seed=4)
    for a in range(5):
        share_points(m, kfs[a:a + 2], 20, start=20 * a)
    for kf in kfs:
        m.update_connections(kf.id)
    poses = {k: m.keyframe_pose(k) for k in (1, 2, 4)}
    for k in (2, 4, 1):
        m.erase_keyframe(k)
    return m, kfs, poses


def test_a_culled_keyframe_keeps_only_its_pose_chain() -> None:
    m, kfs, poses = _culled_chain()
    for k in (1, 2, 4):
        f = kfs[k].frame
        assert len(f) == 0 and f.color is None and f.image is None and f.depth_image is None
        assert f.width == 320 and f.timestamp == kfs[k].timestamp
        assert not kfs[k].covisible and not kfs[k].ordered_covisible
        np.testing.assert_allclose(m.keyframe_pose(k), poses[k], atol=1e-9)
    assert m.n_culled() == 3


def test_pruning_keeps_the_chains_poses_need_and_waits_its_grace() -> None:
    m, kfs, poses = _culled_chain()
    assert m.prune_culled([], grace=4) == 0  # culled too recently
    # Keyframe 2 hangs from 1 (culled later), so a pose on 2 needs 1 as well.
    assert kfs[2].parent_id == 1
    assert m.prune_culled([2], grace=0) == 1
    assert sorted(m.keyframes) == [0, 1, 2, 3, 5]
    np.testing.assert_allclose(m.keyframe_pose(2), poses[2], atol=1e-9)
    assert m.prune_culled([], grace=0) == 2 and m.n_culled() == 0
    assert sorted(m.keyframes) == [0, 3, 5]
    _check_tree(m)


def test_a_loaded_maps_culled_keyframes_are_released() -> None:
    m, kfs = map_with_keyframes(3)
    share_points(m, kfs, 20)
    for kf in kfs:
        m.update_connections(kf.id)
    kfs[1].bad = True  # as a map file of an older version would hold it
    kfs[1].T_cam_parent = np.eye(4)
    m.release_culled()
    assert len(kfs[1].frame) == 0 and m.n_culled() == 1
    assert m.prune_culled([]) == 1  # old enough to go at once


def test_n_tracked_points_counts_observations() -> None:
    m, kfs = map_with_keyframes(3)
    share_points(m, kfs, 4, start=0)
    share_points(m, kfs[:2], 3, start=4)
    m.add_point(np.array([0.0, 0.0, 3.0]), kfs[0], 50)
    assert m.n_tracked_points(kfs[0].id, 1) == 8
    assert m.n_tracked_points(kfs[0].id, 2) == 7
    assert m.n_tracked_points(kfs[0].id, 3) == 4


def test_frame_helper_is_a_frame() -> None:
    assert isinstance(make_frame(np.zeros((0, 2))), Frame)
    assert K_SMALL.shape == (3, 3)


def test_clear_forgets_everything_but_keeps_ids_growing() -> None:
    m, kfs = map_with_keyframes(2)
    pids = share_points(m, kfs, 3)
    m.clear()
    assert m.n_keyframes() == 0 and m.n_points() == 0 and m.origin_kf_id == -1
    assert len(m.point_arrays(pids)) == 0
    assert m.new_keyframe_id() > max(kf.id for kf in kfs)


def _reference_observations_by_objects(m: Map, pids: np.ndarray) -> dict[int, tuple]:
    """What reference_observations must give, read from the point objects: row ->
    (keyframe id, uv there)."""
    out = {}
    for row, pid in enumerate(pids.tolist()):
        mp = m.points.get(pid)
        if mp is None or mp.bad:
            continue
        kf = m.keyframes.get(mp.ref_kf_id)
        kp = mp.observations.get(mp.ref_kf_id)
        if kf is None or kf.bad or kp is None:
            continue
        out[row] = (kf.id, tuple(kf.frame.uv[kp]))
    return out


def test_reference_observations_follow_every_edit_of_the_points() -> None:
    """The store's copy of each point's reference keypoint (what reference_observations
    reads) and of its observations by keypoint level (observation_counts, keyframe
    culling) and of its observations in order (the store's blocks) agree with the point
    objects after additions, erasures, fusions, reference changes and a culled
    keyframe."""
    m, kfs = map_with_keyframes(5, seed=3)
    pids = share_points(m, kfs[:3], 20) + share_points(m, kfs[2:], 20, start=20)
    pids += share_points(m, kfs[1:4], 10, start=40)
    rng = np.random.default_rng(5)
    for pid in rng.choice(pids, 8, replace=False).tolist():
        mp = m.points.get(pid)
        if mp is not None:
            m.erase_observation(pid, mp.ref_kf_id)  # the reference moves on
    m.points[pids[25]].ref_kf_id = kfs[0].id  # seen there only through pids[0] ...
    m.replace_point(pids[0], pids[25])  # ... which it takes over
    m.replace_point(pids[41], pids[1])
    m.points[pids[30]].ref_kf_id = kfs[4].id
    m.points[pids[31]].ref_kf_id = kfs[0].id  # a keyframe that does not see it
    m.add_observation(pids[31], kfs[0].id, 99)  # ... until now
    m.erase_keyframe(kfs[2].id)
    query = np.array([*pids, 10**6, -1], np.int64)  # with unknown ids
    got = m.reference_observations(query)
    want = _reference_observations_by_objects(m, query)
    assert sorted(got.rows.tolist()) == sorted(want)
    for row, g, uv in zip(got.rows.tolist(), got.kf_index.tolist(), got.uv):
        assert (got.kf_ids[g], tuple(uv)) == want[row]
        np.testing.assert_array_equal(got.xyz_world[got.rows.tolist().index(row)],
                                      m.points[int(query[row])].xyz_world)
    for g, kf_id in enumerate(got.kf_ids):
        np.testing.assert_array_equal(got.T_cam_world[g], m.keyframes[kf_id].T_cam_world)
        assert got.frames[g] is m.keyframes[kf_id].frame
    for pid, mp in m.points.items():
        assert m.store.get_one("ref_kp", pid) == mp.observations.get(mp.ref_kf_id, -1)
        by_level = np.bincount([m.keyframes[k].frame.octave[i]
                                for k, i in mp.observations.items()], minlength=16)
        assert m.store.get_one("obs_levels", pid).tolist() == by_level.tolist()
        _, kf_ids, kps = m.store.observations(np.array([pid]))
        assert list(zip(kf_ids.tolist(), kps.tolist())) == list(mp.observations.items())
    for kf in m.keyframes.values():
        if not kf.bad:
            want_counts = [len(m.points[p].observations) for p in kf.point_ids.tolist()
                           if p >= 0 and p in m.points]
            assert m.observation_counts(kf.id).tolist() == want_counts


def test_add_points_makes_what_add_point_makes_one_by_one() -> None:
    """A block of new points: the same ids, store rows, objects, keyframe links and
    change records as creating them one at a time."""
    a, kfs_a = map_with_keyframes(2, seed=9)
    b, kfs_b = map_with_keyframes(2, seed=9)
    share_points(a, kfs_a, 5)
    share_points(b, kfs_b, 5)
    a.take_changes("test"), b.take_changes("test")
    kp = np.array([40, 12, 77, 13])
    xyz = np.random.default_rng(2).uniform(1, 5, (4, 3))
    one = [a.add_point(x, kfs_a[1], int(i)).id for x, i in zip(xyz, kp)]
    block = b.add_points(xyz, kfs_b[1], kp)
    assert block.tolist() == one
    for pid in one:
        pa, pb = a.points[pid], b.points[pid]
        assert (pa.observations, pa.ref_kf_id, pa.first_kf_id, pa.bad, pa.replaced_by) == (
            pb.observations, pb.ref_kf_id, pb.first_kf_id, pb.bad, pb.replaced_by)
        for name in ("xyz", "desc", "normal", "n_visible", "n_found", "ref_kf", "ref_kp"):
            np.testing.assert_array_equal(a.store.get_one(name, pid),  # type: ignore[arg-type]
                                          b.store.get_one(name, pid))  # type: ignore[arg-type]
    np.testing.assert_array_equal(kfs_a[1].point_ids, kfs_b[1].point_ids)
    da, db = a.take_changes("test"), b.take_changes("test")
    assert da.added_ids.tolist() == db.added_ids.tolist() == sorted(one)
    np.testing.assert_array_equal(da.added_xyz, db.added_xyz)
    _check_consistent(b)

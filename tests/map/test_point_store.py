"""The point store: arrays by point id whose size follows the live points."""

from __future__ import annotations

import numpy as np
import pytest

from slam.map.observations import ObservationSlots
from slam.map.point_store import COMPACT_MIN_DEAD, PointStore


def _store(ids: list[int]) -> PointStore:
    st = PointStore(capacity=4)
    for pid in ids:
        st.reserve(pid)
        st.set("xyz", pid, [pid, 2.0 * pid, -pid])
    return st


def test_values_are_found_by_id_whatever_the_rows() -> None:
    st = _store([3, 10, 11, 40, 41, 42])
    ids = np.array([42, 3, 11])
    np.testing.assert_array_equal(st.get("xyz", ids)[:, 0], [42, 3, 11])
    assert st.rows(np.array([3, 4, -1, 99])).tolist()[1:] == [-1, -1, -1]
    assert st.alive_mask(np.array([-1, 3, 4, 42])).tolist() == [False, True, False, True]
    assert st.get_one("n_visible", 10) == 1 and st.get_one("n_found", 10) == 1
    st.add("n_visible", np.array([10, 10, 41]), 1)
    assert st.get("n_visible", np.array([10, 41])).tolist() == [3, 2]
    with pytest.raises(KeyError, match="99"):
        st.get("xyz", np.array([3, 99]))


def test_an_id_below_the_last_is_inserted_in_order() -> None:
    st = _store([5, 9])
    st.reserve(7)
    st.set("desc", 7, np.full(32, 7, np.uint8))
    assert st.live_ids().tolist() == [5, 7, 9]
    assert st.get_one("desc", 7)[0] == 7 and st.get_one("xyz", 9)[0] == 9
    with pytest.raises(ValueError, match="exists"):
        st.reserve(7)


def test_erased_rows_go_and_values_stay_with_their_ids() -> None:
    n = 3 * COMPACT_MIN_DEAD
    st = _store(list(range(n)))
    keep = np.arange(0, n, 97)
    for pid in np.setdiff1d(np.arange(n), keep).tolist():
        st.kill(pid)
    assert st.live_ids().tolist() == keep.tolist()
    np.testing.assert_array_equal(st.get("xyz", keep)[:, 1], 2.0 * keep)
    assert len(st) < 2 * len(keep) + COMPACT_MIN_DEAD  # erased rows were dropped
    assert not st.alive_mask(np.array([1, 2])).any()


def test_memory_follows_the_live_points_not_the_points_ever_made() -> None:
    # A service creates points for days and erases most of them: the store must not
    # grow with the ids.
    st = PointStore()
    live: list[int] = []
    for pid in range(200_000):
        st.reserve(pid)
        live.append(pid)
        if len(live) > 3000:
            st.kill(live.pop(0))
    assert st.live_ids().tolist() == live
    assert st.capacity <= 4 * (3000 + COMPACT_MIN_DEAD)


def test_load_replaces_everything_in_any_order() -> None:
    st = _store([1, 2, 3])
    ids = np.array([30, 10, 20])
    st.load(ids, np.array([True, False, True]),
            {"xyz": np.array([[3.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0]]),
             "n_found": np.array([7, 8, 9])})
    assert st.live_ids().tolist() == [20, 30]
    assert st.get("xyz", np.array([10, 20, 30]))[:, 0].tolist() == [1.0, 2.0, 3.0]
    assert st.get("n_found", np.array([30])).tolist() == [7]
    assert st.rows(np.array([1])).tolist() == [-1]
    with pytest.raises(ValueError, match="unique"):
        st.load(np.array([1, 1]), np.array([True, True]), {})


def test_single_and_batch_lookups_agree_through_growth_insertion_and_compaction() -> None:
    # One point is found through the id -> row dictionary, many through searchsorted:
    # both must name the same row after every way rows move.
    rng = np.random.default_rng(3)
    st = _store(list(range(0, 2 * COMPACT_MIN_DEAD, 2)))  # grown from 4 rows
    st.reserve(5)  # an insertion below the last id
    st.set("xyz", 5, [5, 10, -5])
    for pid in rng.choice(np.arange(0, 2 * COMPACT_MIN_DEAD, 2), COMPACT_MIN_DEAD - 10,
                          replace=False).tolist():
        st.kill(pid)
    st.compact()
    live = st.live_ids()
    ids, (xyz, n_found) = st.gather(np.concatenate([live, [-1, 7, 10**9]]), ("xyz", "n_found"))
    np.testing.assert_array_equal(ids, live)
    np.testing.assert_array_equal(xyz[:, 0], live)
    assert np.all(n_found == 1)
    for pid in rng.choice(live, 50).tolist():
        assert st.get_one("xyz", pid)[1] == 2.0 * pid
        st.set("n_visible", pid, 7)
    with pytest.raises(KeyError, match="7"):
        st.get_one("xyz", 7)
    with pytest.raises(KeyError):
        st.set("xyz", 7, [0.0, 0.0, 0.0])


def test_old_survivors_are_found_below_the_lookup_table() -> None:
    # A point made first and kept (a landmark seen all day) while 300,000 newer ones
    # come and go: the vector lookup's table spans the recent ids only (its memory
    # follows the rows), the survivors below it are found by binary search.
    st = PointStore()
    survivors = [0, 1, 50_000]
    live: list[int] = []
    for pid in range(300_000):
        st.reserve(pid)
        if pid in survivors:
            continue
        live.append(pid)
        if len(live) > 2000:
            st.kill(live.pop(0))
    ids = np.array([*survivors, *live[::7], 2, -1, 299_999 + 1])
    rows = st.rows(ids)
    assert np.all(rows[: -3] >= 0) and np.all(rows[-3:] == -1)
    assert st.rows(np.array([50_000]))[0] == st._t.row(50_000)
    lookup = st._t._lut
    assert lookup is not None and lookup.n_old == len(survivors)
    assert len(lookup.rows) <= 4 * len(st) + 65536
    np.testing.assert_array_equal(st._t.ids[rows[: -3]], ids[: -3])


def test_distinct_alive_is_a_sorted_set_difference_of_live_ids() -> None:
    rng = np.random.default_rng(5)
    ids = sorted(rng.choice(10_000, 600, replace=False).tolist())
    st = _store(ids)
    for pid in ids[::7]:
        st.kill(pid)
    query = rng.choice([*ids, -1, 10_001, 10_002], 3000)  # repeats, -1 and unknown ids
    exclude = rng.choice(ids, 100)
    live = set(st.live_ids().tolist())
    want = sorted((set(query.tolist()) & live) - set(exclude.tolist()))
    assert st.distinct_alive(query, exclude).tolist() == want
    assert st.distinct_alive(query.reshape(-1, 30)).tolist() == sorted(set(query.tolist()) & live)
    assert st.distinct_alive(np.zeros(0, np.int64)).tolist() == []


def test_reserve_many_appends_a_block_as_reserve_would_one_by_one() -> None:
    one, block = _store([2, 5]), _store([2, 5])
    for pid in (7, 8, 20, 21, 22):  # past the capacity of 4: the table grows
        one.reserve(pid)
    block.reserve_many(np.array([7, 8, 20, 21, 22]))
    ids = np.array([2, 5, 7, 8, 20, 21, 22])
    assert len(block) == len(one) == 7 and block.capacity >= 7
    np.testing.assert_array_equal(block.rows(ids), one.rows(ids))
    for name in ("xyz", "n_visible", "n_found", "ref_kp"):
        np.testing.assert_array_equal(block.get(name, ids), one.get(name, ids))  # type: ignore[arg-type]
    assert block.alive_mask(ids).all()
    block.reserve_many(np.zeros(0, np.int64))
    with pytest.raises(ValueError):
        block.reserve_many(np.array([30, 29]))
    with pytest.raises(ValueError):
        block.reserve_many(np.array([22, 23]))  # not above the last id


def test_a_new_row_starts_the_same_whether_appended_or_inserted() -> None:
    """Seen and found once, no observations, no reference keypoint yet: the same start
    for reserve (a last row), an id below the last (inserted) and reserve_many."""
    st = _store([3, 10])
    st.reserve(5)  # below the last id: inserted
    st.reserve(11)
    st.reserve_many(np.array([12, 13]))
    for name, want in (("n_visible", 1), ("n_found", 1), ("ref_kp", 0)):
        assert st.get(name, np.array([5, 11, 12, 13])).tolist() == [want] * 4, name  # type: ignore[arg-type]
    assert not st.get("obs_levels", np.array([5, 11, 12, 13])).any()


def _observations_by_point(st: PointStore, ids: list[int]) -> dict[int, list[tuple[int, int]]]:
    pos, kf, kp = st.observations(np.array(ids, np.int64))
    out: dict[int, list[tuple[int, int]]] = {pid: [] for pid in ids}
    for p, k, i in zip(pos.tolist(), kf.tolist(), kp.tolist()):
        out[ids[p]].append((k, i))
    return out


def test_observations_keep_their_order_through_growth_removal_and_repacking(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Random observations made, re-pointed and dropped, with blocks outgrowing their
    room, points erased and inserted, rows compacted and the slots repacked often:
    each point's observations read back as a dictionary in insertion order would."""
    monkeypatch.setattr("slam.map.observations.REPACK_MIN_GARBAGE", 8)
    repacks: list[int] = []
    repack = ObservationSlots.repack
    monkeypatch.setattr(ObservationSlots, "repack",
                        lambda self, *a: repacks.append(1) or repack(self, *a))
    rng = np.random.default_rng(11)
    st = PointStore(capacity=4)
    want: dict[int, dict[int, int]] = {}
    next_id = 0
    for step in range(3000):
        op = rng.random()
        if op < 0.1 or not want:
            ids = np.arange(next_id, next_id + int(rng.integers(1, 4)))
            next_id += len(ids)
            st.reserve_many(ids)
            kps = rng.integers(0, 500, len(ids))
            st.observe_first(ids, 0, kps)
            want.update({int(p): {0: int(k)} for p, k in zip(ids, kps)})
            continue
        pid = int(rng.choice(list(want)))
        kf = int(rng.integers(0, 30))
        if op < 0.65:
            kp = int(rng.integers(0, 500))
            st.observe(pid, kf, kp)
            want[pid][kf] = kp
        elif op < 0.93:
            st.unobserve(pid, kf)
            want[pid].pop(kf, None)
        else:
            st.unobserve_all(pid)
            st.kill(pid)
            del want[pid]
        if step % 500 == 0:
            st.compact()
    assert repacks  # the left-behind room was reclaimed on the way
    got = _observations_by_point(st, sorted(want))
    assert got == {pid: list(obs.items()) for pid, obs in want.items()}
    pos, _, _ = st.observations(np.array([-1, next_id + 5]))
    assert len(pos) == 0  # unknown ids have none


def test_loaded_observations_read_back_per_point() -> None:
    st = PointStore()
    ids = np.array([9, 2, 5])
    st.load(ids, np.ones(3, bool), {})
    st.load_observations(ids, np.array([2, 0, 3]), np.array([1, 4, 7, 8, 9]),
                         np.array([10, 40, 70, 80, 90]))
    assert _observations_by_point(st, [2, 5, 9]) == {
        2: [], 5: [(7, 70), (8, 80), (9, 90)], 9: [(1, 10), (4, 40)]}
    st.observe(9, 6, 60)  # a full block moves and grows
    assert _observations_by_point(st, [9, 5])[9] == [(1, 10), (4, 40), (6, 60)]
    assert _observations_by_point(st, [9, 5])[5] == [(7, 70), (8, 80), (9, 90)]

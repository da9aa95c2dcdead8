"""The arrays behind the points' observations: blocks, tallies in Counter order."""

from __future__ import annotations

from collections import Counter

import numpy as np

from slam.map.observations import ObservationSlots, block_slots, most_common, tally


def test_block_slots_lists_each_block_in_turn() -> None:
    assert block_slots(np.array([10, 3, 7]), np.array([2, 0, 3])).tolist() == [10, 11, 7, 8, 9]
    assert block_slots(np.zeros(0, np.int64), np.zeros(0, np.int64)).tolist() == []


def test_tally_and_most_common_agree_with_a_counter() -> None:
    """Ties keep the order of first appearance, as Counter.most_common does; the
    tracker's local keyframes and the covisibility links depend on that order."""
    rng = np.random.default_rng(3)
    for _ in range(200):
        keys = rng.integers(0, 12, int(rng.integers(0, 40))).astype(np.int64)
        counter = Counter(keys.tolist())
        got_keys, got_counts = tally(keys)
        assert list(zip(got_keys.tolist(), got_counts.tolist())) == list(counter.items())
        want = [k for k, _ in counter.most_common()]
        assert most_common(got_keys, got_counts).tolist() == want


def test_allocate_copies_the_old_blocks_and_counts_them_as_garbage() -> None:
    slots = ObservationSlots(capacity=4)
    a = slots.allocate(np.array([2, 3]), np.zeros(2, np.int64), np.zeros(2, np.int64),
                       np.zeros(2, np.int64))
    assert a.tolist() == [0, 2] and slots.end == 5 and slots.garbage == 0
    slots.kf[0:2], slots.kp[0:2] = [7, 8], [70, 80]
    b = slots.allocate_one(6, int(a[0]), 2, 2)  # the first block outgrows its room
    assert b == 5 and slots.garbage == 2 and len(slots.kf) >= 11
    assert slots.kf[5:7].tolist() == [7, 8] and slots.kp[5:7].tolist() == [70, 80]
    starts = slots.repack(np.array([b, a[1]]), np.array([2, 0]), np.array([6, 3]))
    assert starts.tolist() == [0, 6] and slots.end == 9 and slots.garbage == 0
    assert slots.kf[0:2].tolist() == [7, 8]

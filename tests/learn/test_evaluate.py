"""Matching metrics on hand-made descriptors; the place protocol equals bench_place's."""

from __future__ import annotations

import cv2
import numpy as np

from benchmarks import bench_place
from slam.geometry.lie import make_pose, so3_exp
from slam.learn.bench import PlaceFrames, bow_ranker
from slam.learn.evaluate import (
    embedding_ranker,
    match_metrics,
    mutual_matches,
    oracle_metrics,
    place_recall,
    position_mutual_matches,
    random_recall,
    repeatability,
)
from slam.place.vocabulary import Vocabulary


def _codes(rows: list[list[int]]) -> np.ndarray:
    """(N, 32) descriptors whose first byte is given, the rest zero."""
    out = np.zeros((len(rows), 32), np.uint8)
    out[:, 0] = [int("".join(map(str, r)), 2) for r in rows]
    return out


def test_mutual_matches_are_mutual() -> None:
    a = _codes([[1, 1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1, 1, 1]])
    b = _codes([[0, 0, 0, 0, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0, 0, 1], [1, 1, 1, 1, 1, 1, 1, 1]])
    ia, ib = mutual_matches(a, b)
    assert sorted(zip(ia.tolist(), ib.tolist())) == [(0, 1), (1, 0)]


def test_match_metrics_counts_correct_matches_by_distance() -> None:
    a = _codes([[1, 1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1, 1, 1], [1, 0, 1, 0, 1, 0, 1, 0]])
    b = _codes([[0, 0, 0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0, 0], [1, 0, 1, 0, 1, 0, 1, 0]])
    uv_b = np.array([[10.0, 10.0], [50.0, 50.0], [90.0, 90.0]])
    truth = np.array([[50.5, 50.0], [14.0, 10.0], [np.nan, np.nan]])  # the last is unknown
    m = match_metrics(a, b, truth, uv_b)
    assert m["matches"] == 2  # the third match has no ground truth
    assert m["precision_1px"] == 0.5 and m["precision_3px"] == 0.5
    assert m["precision_5px"] == 1.0 and m["correct_5px"] == 2


def test_oracle_and_repeatability_on_a_hand_made_pair() -> None:
    nan = np.nan
    # A's true positions in B: three with a B keypoint 1, 2 and 2.5 px away, one 4 px
    # away (not repeatable at 3 px), one unknown
    truth = np.array([[10.0, 10.0], [50.0, 50.0], [90.0, 10.0], [200.0, 200.0], [nan, nan]])
    uv_b = np.array([[300.0, 300.0], [11.0, 10.0], [52.0, 50.0], [90.0, 12.5], [204.0, 200.0]])
    ia, ib = position_mutual_matches(truth, uv_b)
    assert sorted(zip(ia.tolist(), ib.tolist())) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    m = oracle_metrics(truth, uv_b)
    assert set(m) == set(match_metrics(_codes([[1]]), _codes([[1]]), truth[:1], uv_b[:1]))
    assert m["matches"] == 4 and m["correct_3px"] == 3
    assert m["precision_1px"] == 0.25 and m["precision_3px"] == 0.75
    assert m["precision_5px"] == 1.0
    assert repeatability(truth, uv_b, 3.0) == 0.75
    assert repeatability(truth, uv_b, 2.5) == 0.75  # inclusive, like err <= t
    assert repeatability(truth, uv_b, 5.0) == 1.0 and repeatability(truth, uv_b, 0.5) == 0.0
    assert np.isnan(repeatability(truth[4:], uv_b)) and np.isnan(oracle_metrics(
        truth[4:], uv_b)["precision_3px"])


def test_oracle_is_opencv_cross_checked_l2_matching_on_true_positions() -> None:
    rng = np.random.default_rng(1)
    truth = rng.uniform(0, 200, (300, 2)).astype(np.float32).astype(np.float64)
    truth[rng.random(300) < 0.2] = np.nan
    uv_b = rng.uniform(0, 200, (250, 2)).astype(np.float32).astype(np.float64)
    known = np.flatnonzero(np.isfinite(truth).all(axis=1))
    found = cv2.BFMatcher(cv2.NORM_L2, crossCheck=True).match(
        truth[known].astype(np.float32), uv_b.astype(np.float32))
    want = sorted((int(known[m.queryIdx]), m.trainIdx) for m in found)
    ia, ib = position_mutual_matches(truth, uv_b)
    assert sorted(zip(ia.tolist(), ib.tolist())) == want and len(want) > 100


def _scene(rng: np.random.Generator, n_a: int = 400, n_b: int = 400
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A keypoints' truth in B, B keypoints, and descriptors that code position: B's are
    random; A's copy, with 20 bits flipped, the code of the B keypoint nearest to their
    truth blurred by 2 px (when within 8 px)."""
    uv_b = rng.uniform(0, 300, (n_b, 2))
    truth = rng.uniform(0, 300, (n_a, 2))
    truth[: n_a // 2] = uv_b[: n_a // 2] + rng.normal(0, 1.5, (n_a // 2, 2))
    truth[rng.random(n_a) < 0.1] = np.nan
    desc_b = rng.integers(0, 256, (n_b, 32)).astype(np.uint8)
    desc_a = rng.integers(0, 256, (n_a, 32)).astype(np.uint8)
    known = np.isfinite(truth).all(axis=1)
    blurred = np.nan_to_num(truth, nan=-1e6) + rng.normal(0, 2.0, truth.shape)
    d = np.linalg.norm(blurred[:, None] - uv_b[None], axis=2)
    near = known & (d.min(axis=1) < 8.0)
    bits = np.unpackbits(desc_b[d.argmin(axis=1)[near]], axis=1)
    flip = np.argsort(rng.random(bits.shape), axis=1)[:, :20]
    np.put_along_axis(bits, flip, 1 - np.take_along_axis(bits, flip, axis=1), axis=1)
    desc_a[near] = np.packbits(bits, axis=1)
    return truth, uv_b, desc_a, desc_b


def test_oracle_is_perfect_on_repeatable_keypoints_of_a_random_scene() -> None:
    """What bounds a descriptor: on the A keypoints with a B keypoint within 3 px the
    oracle is always right, and wrong on all others it matches; a noisy position code
    and a random descriptor score below it there (overall it is no bound, see below)."""
    truth, uv_b, desc_a, desc_b = _scene(np.random.default_rng(2))
    d = np.linalg.norm(np.nan_to_num(truth, nan=-1e6)[:, None] - uv_b[None], axis=2)
    rep = d.min(axis=1) <= 3.0  # unknown truth: never repeatable
    assert repeatability(truth, uv_b) == np.count_nonzero(rep) / np.isfinite(truth[:, 0]).sum()
    oracle = oracle_metrics(truth, uv_b)
    ia, _ = position_mutual_matches(truth, uv_b)
    assert oracle["correct_3px"] == np.count_nonzero(rep[ia]) < len(ia)
    on_rep = oracle_metrics(np.where(rep[:, None], truth, np.nan), uv_b)
    assert on_rep["precision_3px"] == 1.0 and on_rep["matches"] > 100
    masked = np.where(rep[:, None], truth, np.nan)
    noisy = match_metrics(desc_a, desc_b, masked, uv_b)
    rand = match_metrics(desc_a[::-1].copy(), desc_b, masked, uv_b)
    assert 0.5 < noisy["precision_3px"] < 1.0 and rand["precision_3px"] < 0.1


def test_oracle_is_a_reference_not_a_bound() -> None:
    # a0 has no B keypoint within 3 px (5 px off); a2 (unknown truth) looks like b0, so a
    # descriptor leaves a0 unmatched and scores 1.0 where the oracle scores 0.5
    truth = np.array([[0.0, 0.0], [50.0, 0.0], [np.nan, np.nan]])
    uv_b = np.array([[5.0, 0.0], [50.0, 1.0]])
    a = _codes([[1, 1, 0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0, 0]])
    b = _codes([[1, 1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1, 1, 1]])
    assert oracle_metrics(truth, uv_b)["precision_3px"] == 0.5
    assert match_metrics(a, b, truth, uv_b)["precision_3px"] == 1.0


def _trajectory(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames rocking back and forth about the vertical axis (revisits), 30 Hz."""
    t = np.arange(n) / 30.0
    yaw = np.radians(30.0) * np.sin(2 * np.pi * t / 3.0)
    T = np.stack([make_pose(so3_exp(np.array([0.0, y, 0.0])), np.array([0.01 * np.cos(y), 0, 0]))
                  for y in yaw])
    return np.arange(n, dtype=np.int64), t, T


def test_place_recall_equals_bench_place_protocol() -> None:
    rng = np.random.default_rng(0)
    index, stamps, T = _trajectory(240)
    # descriptors: a pool per 5-degree bin of yaw, so similar views share words
    pools = rng.integers(0, 256, (40, 300, 32)).astype(np.uint8)
    yaw_bin = np.digitize(np.degrees(np.arctan2(T[:, 0, 2], T[:, 2, 2])), np.arange(-30, 31, 5))
    desc = [pools[b][rng.choice(300, 150, replace=False)] for b in yaw_bin]
    vocab = Vocabulary.train(desc[::3], k=6, depth=3, seed=0)
    frames = bench_place.Frames(index, stamps, T, desc)
    want = bench_place.recall(frames, [vocab.transform(d)[0] for d in desc], vocab.n_words)
    pf = PlaceFrames(index, stamps, T, desc, np.zeros((240, 4), np.float32),
                     np.zeros(240, np.int8))
    db = np.flatnonzero(index % 10 == 0)
    got = place_recall(index, stamps, T, bow_ranker(pf, vocab, db))
    assert got == want
    assert got["queries_counted"] > 100 and got["recall_at_1"] > got["random_recall_at_1"]


def test_embedding_ranker_by_cosine_leaves_out_excluded() -> None:
    emb = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0, 1]]
    db = np.array([0, 1, 2, 3], np.int64)
    rank = embedding_ranker(emb, db)
    assert rank(4, [])[0] == 0 and rank(5, [])[0] == 1
    assert 0 not in rank(4, [0])


def test_place_recall_with_a_perfect_ranker() -> None:
    index, stamps, T = _trajectory(120)
    pos = T[:, :3, 3]

    def oracle(q: int, exclude: list[int]) -> list[int]:
        db = [i for i in range(0, 120, 10) if i not in exclude]
        ang = [np.degrees(np.arccos(np.clip((np.trace(T[q, :3, :3].T @ T[i, :3, :3]) - 1) / 2,
                                            -1, 1))) + np.linalg.norm(pos[i] - pos[q])
               for i in db]
        return [db[k] for k in np.argsort(ang)][:5]

    r = place_recall(index, stamps, T, oracle)
    assert r["recall_at_1"] == 1.0
    assert random_recall(10, 10, 1) == 1.0 and random_recall(10, 0, 5) == 0.0

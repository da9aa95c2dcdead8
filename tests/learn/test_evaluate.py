"""Matching metrics on hand-made descriptors; the place protocol equals bench_place's."""

from __future__ import annotations

import numpy as np

from benchmarks import bench_place
from slam.geometry.lie import make_pose, so3_exp
from slam.learn.bench import PlaceFrames, bow_ranker
from slam.learn.evaluate import (
    embedding_ranker,
    match_metrics,
    mutual_matches,
    place_recall,
    random_recall,
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

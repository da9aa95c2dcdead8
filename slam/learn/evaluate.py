"""Metrics shared by training (validation) and ``slam bench-learned``; no torch.

* :func:`match_metrics`: mutual-nearest-neighbour Hamming matching of two frames'
  binary descriptors, scored against ground-truth correspondences: the share of
  matches within 1/3/5 px of the true position (mean matching accuracy, MMA).
* :func:`oracle_metrics`: the same scores for the position oracle (mutual nearest
  neighbours by true pixel distance: a descriptor that knew where every keypoint
  went); :func:`repeatability`: the share of keypoints with a counterpart within 3 px.
* :func:`place_recall`: the place-recognition protocol of ``benchmarks/bench_place.py``
  (database every 10th frame, queries the rest, candidates within 1 s of the query
  left out, a true place is a database frame within 0.3 m and 20 degrees), for any
  ranking function, so bag of words and the learned embedding are scored alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray
from scipy.spatial import cKDTree

THRESHOLDS_PX = (1, 3, 5)
DB_EVERY = 10
WINDOW_S = 1.0
TRUE_DIST_M = 0.3
TRUE_ANGLE_DEG = 20.0


def mutual_matches(desc_a: NDArray[np.uint8], desc_b: NDArray[np.uint8]
                   ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Mutual nearest neighbours by Hamming distance of (N, 32) and (M, 32) descriptors:
    index arrays ``(ia, ib)`` of equal length."""
    if len(desc_a) == 0 or len(desc_b) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True)
    found = matcher.match(np.ascontiguousarray(desc_a), np.ascontiguousarray(desc_b))
    ia = np.array([m.queryIdx for m in found], np.int64)
    ib = np.array([m.trainIdx for m in found], np.int64)
    return ia, ib


def match_metrics(desc_a: NDArray[np.uint8], desc_b: NDArray[np.uint8],
                  uv_true_b: NDArray[np.float64], uv_b: NDArray[np.float64],
                  thresholds: Sequence[float] = THRESHOLDS_PX) -> dict[str, float]:
    """Scores of the mutual matches of A's (N, 32) and B's (M, 32) descriptors.

    ``uv_true_b`` (N, 2): where each keypoint of A truly lies in B (NaN: unknown);
    ``uv_b`` (M, 2): B's keypoints. Only matches whose A keypoint has a known position
    count. ``precision_{t}px``: share of those within ``t`` pixels (MMA at t);
    ``matches``: their number; ``correct_{t}px``: the correct ones.
    """
    ia, ib = mutual_matches(desc_a, desc_b)
    return _score(ia, ib, uv_true_b, uv_b, thresholds)


def _score(ia: NDArray[np.int64], ib: NDArray[np.int64], uv_true_b: NDArray[np.float64],
           uv_b: NDArray[np.float64], thresholds: Sequence[float]) -> dict[str, float]:
    """The scores of :func:`match_metrics` for the matches ``(ia, ib)``."""
    known = np.isfinite(uv_true_b[ia]).all(axis=1) if len(ia) else np.zeros(0, bool)
    ia, ib = ia[known], ib[known]
    err = np.linalg.norm(uv_true_b[ia] - uv_b[ib], axis=1) if len(ia) else np.zeros(0)
    out: dict[str, float] = {"matches": float(len(ia))}
    for t in thresholds:
        correct = int(np.count_nonzero(err <= t))
        out[f"correct_{t:g}px"] = float(correct)
        out[f"precision_{t:g}px"] = correct / len(ia) if len(ia) else float("nan")
    return out


def position_mutual_matches(uv_true_b: NDArray[np.float64], uv_b: NDArray[np.float64]
                            ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Mutual nearest neighbours by pixel distance between A's true positions in B
    ``uv_true_b`` (N, 2; NaN rows, unknown, never match) and B's keypoints ``uv_b``
    (M, 2), with no distance threshold: index arrays ``(ia, ib)`` of equal length."""
    known = np.flatnonzero(np.isfinite(uv_true_b).all(axis=1))
    if len(known) == 0 or len(uv_b) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    _, nn_b = cKDTree(uv_b).query(uv_true_b[known])  # for each known A: nearest B
    _, nn_a = cKDTree(uv_true_b[known]).query(uv_b)  # for each B: nearest known A
    mutual = nn_a[nn_b] == np.arange(len(known))
    return known[mutual].astype(np.int64), np.asarray(nn_b[mutual], np.int64)


def oracle_metrics(uv_true_b: NDArray[np.float64], uv_b: NDArray[np.float64],
                   thresholds: Sequence[float] = THRESHOLDS_PX) -> dict[str, float]:
    """:func:`match_metrics` of the position oracle: the matches of
    :func:`position_mutual_matches`, i.e. of a descriptor whose distance is the true
    pixel distance. Its wrong matches at t px are exactly the mutual pairs of A
    keypoints with no B keypoint within t px. The reference a descriptor is measured
    against, not a strict bound: a descriptor that leaves such A keypoints unmatched
    can score higher."""
    ia, ib = position_mutual_matches(uv_true_b, uv_b)
    return _score(ia, ib, uv_true_b, uv_b, thresholds)


def repeatability(uv_true_b: NDArray[np.float64], uv_b: NDArray[np.float64],
                  radius_px: float = 3.0) -> float:
    """Share of A's keypoints with a known true position ``uv_true_b`` (N, 2; NaN:
    unknown) that have one of B's keypoints ``uv_b`` (M, 2) within ``radius_px``
    pixels; NaN when none is known."""
    true = uv_true_b[np.isfinite(uv_true_b).all(axis=1)]
    if len(true) == 0:
        return float("nan")
    if len(uv_b) == 0:
        return 0.0
    dist, _ = cKDTree(uv_b).query(true)
    return float(np.count_nonzero(dist <= radius_px)) / len(true)


def angle_deg(R_a: NDArray[np.float64], R_b: NDArray[np.float64]) -> NDArray[np.float64]:
    """Rotation angles (M,) in degrees between R_a (3, 3) and each of R_b (M, 3, 3)."""
    cos = (np.einsum("ij,mij->m", R_a, R_b) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def random_recall(n_allowed: int, n_true: int, k: int) -> float:
    """Probability that k of n_allowed frames drawn at random include one of n_true."""
    miss = 1.0
    for i in range(min(k, n_allowed)):
        miss *= max(n_allowed - n_true - i, 0) / (n_allowed - i)
    return 1.0 - miss


RankFn = Callable[[int, list[int]], list[int]]


def place_recall(index: NDArray[np.int64], stamps: NDArray[np.float64],
                 T_world_cam: NDArray[np.float64], rank: RankFn,
                 query_mask: NDArray[np.bool_] | None = None) -> dict[str, Any]:
    """Recall@1/@5 of a place recogniser over frames (F,) with frame numbers ``index``,
    ``stamps`` s and ground truth ``T_world_cam`` (F, 4, 4).

    Database: frames whose number is a multiple of :data:`DB_EVERY`; queries: the rest
    (only those in ``query_mask`` when given). ``rank(q, exclude)`` returns database
    positions (into the F frames) best first, at least 5, leaving out ``exclude``.
    """
    is_db = index % DB_EVERY == 0
    db = np.flatnonzero(is_db)
    queries = ~is_db if query_mask is None else ~is_db & query_mask
    hits = {1: 0, 5: 0}
    rand = {1: 0.0, 5: 0.0}
    n_counted = 0
    pos = T_world_cam[:, :3, 3]
    for q in np.flatnonzero(queries):
        near_t = np.abs(stamps[db] - stamps[q]) <= WINDOW_S
        close = (np.linalg.norm(pos[db] - pos[q], axis=1) < TRUE_DIST_M) & (
            angle_deg(T_world_cam[q, :3, :3], T_world_cam[db, :3, :3]) < TRUE_ANGLE_DEG)
        true = set(db[close & ~near_t].tolist())
        if not true:
            continue
        n_counted += 1
        found = rank(int(q), db[near_t].tolist())
        for k in hits:
            hits[k] += int(bool(true.intersection(found[:k])))
            rand[k] += random_recall(int(np.count_nonzero(~near_t)), len(true), k)
    n = max(n_counted, 1)
    return {"database_frames": len(db), "queries": int(np.count_nonzero(queries)),
            "queries_counted": n_counted,
            "recall_at_1": hits[1] / n, "recall_at_5": hits[5] / n,
            "random_recall_at_1": rand[1] / n, "random_recall_at_5": rand[5] / n}


def embedding_ranker(embeddings: NDArray[np.float32], db: NDArray[np.int64]) -> RankFn:
    """A ``rank`` function for :func:`place_recall`: database positions ``db`` by cosine
    similarity of unit ``embeddings`` (F, D), best first."""
    db_emb = embeddings[db]

    def rank(q: int, exclude: list[int]) -> list[int]:
        score = db_emb @ embeddings[q]
        order = db[np.argsort(-score, kind="stable")]
        skip = set(exclude)
        return [int(i) for i in order if int(i) not in skip][:5]

    return rank

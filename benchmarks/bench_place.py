"""Benchmark: place recognition with the bag of binary words on TUM fr1_rpy.

Run ``python -m benchmarks.bench_place [--out results/place.json] [--vocabulary FILE]``.

(a) Recall@1 and @5 of the right place. Database: the BoW of every 10th frame; queries:
    the other frames. A query's candidates leave out the database frames within 1 s of it
    (else recall is trivial), and only queries that have a true place in the database (a
    frame outside that window within 0.3 m and 20 degrees by ground truth) count. The
    random baseline is the exact expectation of drawing K of the allowed frames at random.
(b) Query time for a 1000-keyframe database (the sequence's real BoW vectors, repeated),
    median and 95th percentile.
(c) Transform time (descriptors -> BoW + feature vector) of 1000 descriptors.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from slam.place.database import KeyframeDatabase
from slam.place.recognizer import default_vocabulary_path, load_vocabulary
from slam.place.vocabulary import BowVector, Vocabulary

log = logging.getLogger("benchmarks.bench_place")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATASETS = REPO.parent / "shared" / "datasets"
TUM_RPY = "tum/rgbd_dataset_freiburg1_rpy"
DB_EVERY = 10
WINDOW_S = 1.0
TRUE_DIST_M = 0.3
TRUE_ANGLE_DEG = 20.0
N_KEYFRAMES = 1000


@dataclass
class Frames:
    """Frames of a sequence that have ground truth: ``index`` (F,) frame numbers,
    ``stamps`` (F,) s, ``T_world_cam`` (F, 4, 4), ``descriptors`` F arrays (N_i, 32) uint8."""

    index: NDArray[np.int64]
    stamps: NDArray[np.float64]
    T_world_cam: NDArray[np.float64]
    descriptors: list[NDArray[np.uint8]]


def load_sequence(folder: Path, n_features: int) -> Frames:
    """ORB descriptors of every frame of a TUM folder, with ground truth by timestamp."""
    from slam.config import FeatureConfig
    from slam.features.orb import OrbExtractor
    from slam.io.sources.tum import TumSource, associate

    source = TumSource(folder, "mono")
    gt = source.ground_truth()
    if gt is None:
        raise SystemExit(f"{folder}: no groundtruth.txt")
    extractor = OrbExtractor(FeatureConfig.model_validate({}), n_features)
    stamps, desc = [], []
    for frame in source:
        stamps.append(frame.timestamp)
        desc.append(extractor.extract(frame.image).descriptors)
    pairs = associate(np.asarray(stamps), gt.stamps, max_diff=0.02)
    idx = np.array([i for i, _ in pairs], dtype=np.int64)
    gt_idx = np.array([j for _, j in pairs], dtype=np.int64)
    log.info("%s: %d frames, %d with ground truth", folder.name, len(stamps), len(idx))
    return Frames(idx, np.asarray(stamps)[idx], gt.T_world_cam[gt_idx],
                     [desc[i] for i in idx])


def _angle_deg(R_a: NDArray[np.float64], R_b: NDArray[np.float64]) -> NDArray[np.float64]:
    """Rotation angles (M,) in degrees between R_a (3, 3) and each of R_b (M, 3, 3)."""
    cos = (np.einsum("ij,mij->m", R_a, R_b) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def _random_recall(n_allowed: int, n_true: int, k: int) -> float:
    """Probability that k of n_allowed frames drawn at random include one of n_true."""
    miss = 1.0
    for i in range(min(k, n_allowed)):
        miss *= max(n_allowed - n_true - i, 0) / (n_allowed - i)
    return 1.0 - miss


def recall(seq: Frames, bows: list[BowVector], n_words: int) -> dict[str, Any]:
    """Recall@1/@5 of the BoW database and of random ranking (see the module docstring)."""
    is_db = seq.index % DB_EVERY == 0
    db = np.flatnonzero(is_db)
    database = KeyframeDatabase(n_words)
    for i in db:
        database.add(int(i), bows[i])
    hits = {1: 0, 5: 0}
    rand = {1: 0.0, 5: 0.0}
    n_counted = 0
    pos = seq.T_world_cam[:, :3, 3]
    for q in np.flatnonzero(~is_db):
        near_t = np.abs(seq.stamps[db] - seq.stamps[q]) <= WINDOW_S
        close = (np.linalg.norm(pos[db] - pos[q], axis=1) < TRUE_DIST_M) & (
            _angle_deg(seq.T_world_cam[q, :3, :3], seq.T_world_cam[db, :3, :3]) < TRUE_ANGLE_DEG)
        true = set(db[close & ~near_t].tolist())
        if not true:
            continue
        n_counted += 1
        found = [kf for kf, _ in database.query(bows[q], 5, exclude=db[near_t].tolist())]
        for k in hits:
            hits[k] += int(bool(true.intersection(found[:k])))
            rand[k] += _random_recall(int(np.count_nonzero(~near_t)), len(true), k)
    n = max(n_counted, 1)
    return {"database_frames": len(db), "queries": int(np.count_nonzero(~is_db)),
            "queries_counted": n_counted,
            "recall_at_1": hits[1] / n, "recall_at_5": hits[5] / n,
            "random_recall_at_1": rand[1] / n, "random_recall_at_5": rand[5] / n}


def _stats_ms(times_s: Sequence[float]) -> dict[str, float]:
    t = np.asarray(times_s) * 1e3
    return {"median_ms": float(np.median(t)), "p95_ms": float(np.percentile(t, 95)),
            "n": len(t)}


def query_time(bows: list[BowVector], n_words: int, max_results: int = 10) -> dict[str, Any]:
    """Per-query time of a database of N_KEYFRAMES real BoW vectors (repeated cyclically)."""
    database = KeyframeDatabase(n_words)
    t0 = time.perf_counter()
    for kf in range(N_KEYFRAMES):
        database.add(kf, bows[kf % len(bows)])
    add_s = (time.perf_counter() - t0) / N_KEYFRAMES
    queries = bows[:: max(1, len(bows) // 200)]
    database.query(queries[0], max_results)  # compile / load the kernel
    times = []
    for bow in queries:
        t = time.perf_counter()
        database.query(bow, max_results)
        times.append(time.perf_counter() - t)
    words = float(np.mean([len(bows[kf % len(bows)]) for kf in range(N_KEYFRAMES)]))
    return {"keyframes": N_KEYFRAMES, "mean_words_per_keyframe": words,
            "add_ms": add_s * 1e3, **_stats_ms(times)}


def transform_time(vocab: Vocabulary, descriptors: list[NDArray[np.uint8]]) -> dict[str, Any]:
    """Time of :meth:`Vocabulary.transform` on 1000 descriptors of each frame that has them."""
    sets = [d[:1000] for d in descriptors if len(d) >= 1000]
    if not sets:
        raise SystemExit("no frame has 1000 descriptors")
    vocab.transform(sets[0])
    times = []
    for d in sets:
        t = time.perf_counter()
        vocab.transform(d)
        times.append(time.perf_counter() - t)
    return {"descriptors": 1000, **_stats_ms(times)}


def table(result: dict[str, Any]) -> str:
    """A short plain-text table of the results."""
    r, q, t = result["recall"], result["query"], result["transform"]
    return "\n".join([
        f"vocabulary {result['vocabulary']} ({result['n_words']} words)",
        f"{'':24s}{'BoW':>10s}{'random':>10s}",
        f"{'recall@1':24s}{r['recall_at_1']:10.3f}{r['random_recall_at_1']:10.3f}",
        f"{'recall@5':24s}{r['recall_at_5']:10.3f}{r['random_recall_at_5']:10.3f}",
        f"({r['queries_counted']} of {r['queries']} queries have a true place; "
        f"database {r['database_frames']} frames)",
        f"query, {q['keyframes']} keyframes: median {q['median_ms']:.3f} ms, "
        f"p95 {q['p95_ms']:.3f} ms ({q['mean_words_per_keyframe']:.0f} words/keyframe)",
        f"transform, 1000 descriptors: median {t['median_ms']:.3f} ms, p95 {t['p95_ms']:.3f} ms",
    ])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_place", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("results/place.json"), help="JSON output")
    p.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS, help="shared datasets")
    p.add_argument("--vocabulary", type=Path, help="vocabulary file (default: the shipped one)")
    p.add_argument("--features", type=int, default=1000, help="ORB features per frame")
    p.add_argument("-v", "--verbose", action="count", default=0)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table, write the JSON; 0 on success."""
    from slam.cli.main import configure_logging

    args = parse_args(argv)
    configure_logging(args.verbose)
    vocab_path = args.vocabulary or default_vocabulary_path()
    vocab = load_vocabulary(vocab_path)
    seq = load_sequence(args.datasets / TUM_RPY, args.features)
    bows = [vocab.transform(d)[0] for d in seq.descriptors]
    result = {
        "vocabulary": str(vocab_path), "n_words": vocab.n_words,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
                   f"Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "protocol": {"db_every": DB_EVERY, "window_s": WINDOW_S, "true_dist_m": TRUE_DIST_M,
                     "true_angle_deg": TRUE_ANGLE_DEG, "features": args.features},
        "recall": recall(seq, bows, vocab.n_words),
        "query": query_time(bows, vocab.n_words),
        "transform": transform_time(vocab, seq.descriptors),
    }
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

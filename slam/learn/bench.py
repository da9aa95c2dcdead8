"""The learned models against ORB and bag of words on held-out frames (no torch).

* :func:`descriptor_benchmark`: pairs of test-span frames ``gap`` frames apart; on the
  same ORB keypoints, ORB's and the learned descriptors are matched (mutual nearest
  neighbours, Hamming) and scored against ground-truth correspondences (depth + poses):
  mean matching accuracy at 1/3/5 px. Scored alike: the position oracle (mutual
  nearest neighbours by true pixel distance, the reference a perfect descriptor would
  reach under this protocol), and the repeatability at 3 px (share of A's keypoints
  with known truth that have a B keypoint within 3 px). Also the time of the learned descriptor for
  1000 keypoints (patches + cv2.dnn + packing) and of ORB's own descriptor.
* :func:`place_benchmark`: recall@1/@5 of the bag of words and of the learned embedding
  with the protocol of ``benchmarks/bench_place.py``, on the test span alone (nothing
  seen in training) and on the whole sequence (the protocol's original setting).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from slam.config import FeatureConfig
from slam.features.orb import Keypoints, OrbExtractor
from slam.features.patches import standardize
from slam.learn.data import TEST, FlowTracks, LearnFrame, SplitSpec, open_sequence, project_to
from slam.learn.evaluate import (
    THRESHOLDS_PX,
    embedding_ranker,
    match_metrics,
    oracle_metrics,
    place_recall,
    repeatability,
)

log = logging.getLogger(__name__)

GAPS = (3, 10, 20)


@dataclass
class _Described:
    frame: LearnFrame
    kp: Keypoints
    learned: NDArray[np.uint8]
    tracks: FlowTracks


@dataclass
class _Tally:
    per_pair: dict[str, list[dict[str, float]]] = field(
        default_factory=lambda: {"orb": [], "learned": [], "orb_mocap": [], "learned_mocap": [],
                                 "oracle": [], "oracle_mocap": []})
    repeat_3px: dict[str, list[float]] = field(default_factory=lambda: {"": [], "_mocap": []})

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pairs": len(self.per_pair["orb"]),
                               "truth": "depth + poses, refined by flow tracks (FlowTracks); "
                                        "*_mocap: depth + poses alone"}
        for t in THRESHOLDS_PX:
            out[f"precision_{t}px"] = {
                name: _nanmean([m[f"precision_{t}px"] for m in rows])
                for name, rows in self.per_pair.items()}
        out["matches_per_pair"] = {name: _nanmean([m["matches"] for m in rows])
                                   for name, rows in self.per_pair.items()}
        out["correct_3px_per_pair"] = {name: _nanmean([m["correct_3px"] for m in rows])
                                       for name, rows in self.per_pair.items()}
        for suffix, values in self.repeat_3px.items():
            out[f"repeatability_3px{suffix}"] = _nanmean(values)
        return out


def _nanmean(values: list[float]) -> float:
    arr = np.asarray(values, np.float64)
    return float(np.nanmean(arr)) if np.isfinite(arr).any() else float("nan")


def _stats_ms(times_s: list[float]) -> dict[str, float]:
    t = np.asarray(times_s) * 1e3
    if len(t) == 0:
        return {"median_ms": float("nan"), "p95_ms": float("nan"), "n": 0}
    return {"median_ms": float(np.median(t)), "p95_ms": float(np.percentile(t, 95)),
            "n": len(t)}


def descriptor_benchmark(uri: str, describer: Any, split: SplitSpec, gaps: tuple[int, ...] = GAPS,
                         n_features: int = 1000) -> dict[str, Any]:
    """ORB vs the learned descriptor (``describer``: a LearnedDescriptor) on the test span
    of ``uri``; returns precision per threshold and method (``oracle``: by true
    position), repeatability at 3 px, and timings."""
    seq = open_sequence(uri)
    if not seq.has_depth:
        raise ValueError(f"{uri}: no depth and ground truth for correspondences")
    cam = seq.calibration.camera
    spans = split.of(seq.length)
    orb = OrbExtractor(FeatureConfig.model_validate({}), n_features)
    window: deque[_Described] = deque(maxlen=max(gaps))
    tally = _Tally()
    t_total, t_net, t_orb = [], [], []
    for f in seq.frames:
        if spans[f.index] != TEST:
            continue
        kp = orb.extract(f.image)
        t0 = time.perf_counter()
        learned = describer.compute(f.image, kp.uv_raw, kp.octave, kp.angle)
        t_total.append((time.perf_counter() - t0) * 1000.0 / max(len(kp), 1))
        t_net.append(_net_time(describer, f.image, kp))
        t_orb.append(_orb_time(orb, f.image, kp))
        for prev in window:
            tracked = prev.tracks.advance(f)
            if f.index - prev.frame.index not in gaps:
                continue
            mocap = project_to(cam, prev.kp.uv_raw, prev.frame, f)
            for suffix, proj in (("", tracked), ("_mocap", mocap)):
                uv_true = np.where(proj.valid[:, None], proj.uv_raw_b, np.nan)
                tally.per_pair["orb" + suffix].append(
                    match_metrics(prev.kp.descriptors, kp.descriptors, uv_true, kp.uv_raw))
                tally.per_pair["learned" + suffix].append(
                    match_metrics(prev.learned, learned, uv_true, kp.uv_raw))
                tally.per_pair["oracle" + suffix].append(oracle_metrics(uv_true, kp.uv_raw))
                tally.repeat_3px[suffix].append(repeatability(uv_true, kp.uv_raw, 3.0))
        window.append(_Described(f, kp, learned, FlowTracks(cam, f, kp.uv_raw)))
    out = tally.summary()
    out.update(sequence=seq.name, gaps=list(gaps), frames=len(t_total),
               ms_per_1000_keypoints=_stats_ms(t_total), net_ms_per_1000_keypoints=_stats_ms(t_net),
               orb_descriptor_ms_per_1000_keypoints=_stats_ms(t_orb))
    return out


def _net_time(describer: Any, image: NDArray[np.uint8], kp: Keypoints) -> float:
    """Seconds x 1000 / keypoint of the network alone (cv2.dnn forward)."""
    x = standardize(describer.sampler.sample(image, kp.uv_raw, kp.octave, kp.angle))
    t0 = time.perf_counter()
    describer.runner.forward(x)
    return (time.perf_counter() - t0) * 1000.0 / max(len(kp), 1)


def _orb_time(orb: OrbExtractor, image: NDArray[np.uint8], kp: Keypoints) -> float:
    """Seconds x 1000 / keypoint of ORB's descriptor on the same keypoints."""
    import cv2

    kps = [cv2.KeyPoint(float(u), float(v), 31.0 * orb.cfg.scale_factor ** int(o), float(a),
                        0.0, int(o)) for (u, v), o, a in zip(kp.uv_raw, kp.octave, kp.angle)]
    t0 = time.perf_counter()
    orb._orb.compute(image, kps)
    return (time.perf_counter() - t0) * 1000.0 / max(len(kp), 1)


@dataclass
class PlaceFrames:
    """Frames with ground truth: numbers ``index`` (F,), ``stamps`` (F,), ``T_world_cam``
    (F, 4, 4), ORB ``descriptors`` (F arrays (N, 32)), ``embeddings`` (F, D), ``span`` (F,)."""

    index: NDArray[np.int64]
    stamps: NDArray[np.float64]
    T_world_cam: NDArray[np.float64]
    descriptors: list[NDArray[np.uint8]]
    embeddings: NDArray[np.float32]
    span: NDArray[np.int8]


def load_place_frames(folder: Path, embedder: Any, split: SplitSpec, n_features: int = 1000
                      ) -> PlaceFrames:
    """Every frame of a TUM folder as ``bench_place.load_sequence`` reads it (mono source,
    ground truth associated within 20 ms), with ORB descriptors and learned embeddings."""
    from slam.io.sources.tum import TumSource, associate

    source = TumSource(folder, "mono")
    gt = source.ground_truth()
    if gt is None:
        raise ValueError(f"{folder}: no groundtruth.txt")
    extractor = OrbExtractor(FeatureConfig.model_validate({}), n_features)
    stamps, desc, emb = [], [], []
    for frame in source:
        stamps.append(frame.timestamp)
        desc.append(extractor.extract(frame.image).descriptors)
        emb.append(embedder.embed(frame.image))
    pairs = associate(np.asarray(stamps), gt.stamps, max_diff=0.02)
    idx = np.array([i for i, _ in pairs], dtype=np.int64)
    gt_idx = np.array([j for _, j in pairs], dtype=np.int64)
    spans = split.of(len(stamps))
    return PlaceFrames(idx, np.asarray(stamps)[idx], gt.T_world_cam[gt_idx],
                       [desc[i] for i in idx], np.stack(emb)[idx], spans[idx])


def bow_ranker(frames: PlaceFrames, vocabulary: Any, db: NDArray[np.int64]) -> Any:
    """A ``rank`` function of the bag-of-words keyframe database over ``db`` positions."""
    from slam.place.database import KeyframeDatabase

    bows = [vocabulary.transform(d)[0] for d in frames.descriptors]
    database = KeyframeDatabase(vocabulary.n_words)
    for i in db:
        database.add(int(i), bows[i])

    def rank(q: int, exclude: list[int]) -> list[int]:
        return [kf for kf, _ in database.query(bows[q], 5, exclude=exclude)]

    return rank


def place_benchmark(frames: PlaceFrames, vocabulary: Any) -> dict[str, Any]:
    """Recall of BoW and the learned embedding: ``test_span`` (database and queries from
    the test span only, renumbered from 0) and ``full_sequence``."""
    out: dict[str, Any] = {}
    for name, keep in (("test_span", frames.span == TEST),
                       ("full_sequence", np.ones(len(frames.index), bool))):
        rows = np.flatnonzero(keep)
        sub = PlaceFrames(frames.index[rows] - frames.index[rows][0], frames.stamps[rows],
                          frames.T_world_cam[rows], [frames.descriptors[i] for i in rows],
                          frames.embeddings[rows], frames.span[rows])
        db = np.flatnonzero(sub.index % 10 == 0)
        out[name] = {
            "bow": place_recall(sub.index, sub.stamps, sub.T_world_cam,
                                bow_ranker(sub, vocabulary, db)),
            "learned": place_recall(sub.index, sub.stamps, sub.T_world_cam,
                                    embedding_ranker(sub.embeddings, db)),
        }
    return out

"""``slam bench-learned``: the learned descriptor and place embedding against ORB and the
bag of words on held-out frames, end-to-end SLAM with each, and the training curves.

Runs with cv2.dnn only (no torch). See :mod:`slam.learn.bench` for the protocols.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_DATASETS = Path(__file__).resolve().parents[3] / "shared" / "datasets"
TUM_RPY = "tum/rgbd_dataset_freiburg1_rpy"
KITTI_06 = "kitti/sequences/06"


def register(commands: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
    """Add the ``bench-learned`` subparser to ``commands``."""
    p = commands.add_parser(
        "bench-learned", parents=list(parents),
        help="benchmark the learned descriptor and place embedding",
        description="Held-out matching accuracy (learned vs ORB on the same keypoints), "
        "descriptor time per 1000 keypoints through cv2.dnn, place recall (learned vs bag "
        "of words, the protocol of benchmarks/bench_place.py), end-to-end ATE and fps of "
        "slam run with each, and a plot of the training curves.")
    p.add_argument("--out", type=Path, default=Path("results/learned.json"), metavar="JSON")
    p.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS, metavar="DIR",
                   help="the shared datasets folder")
    p.add_argument("--descriptor-model", default="", metavar="ONNX",
                   help="default: the shipped slam/data/models/descriptor.onnx")
    p.add_argument("--embedding-model", default="", metavar="ONNX",
                   help="default: the shipped slam/data/models/embedding.onnx")
    p.add_argument("--vocabulary", default="", metavar="FILE", help="BoW vocabulary "
                   "(default: the shipped one)")
    p.add_argument("--split", type=float, nargs=2, default=(0.7, 0.1), metavar=("TRAIN", "VAL"),
                   help="time-span shares used in training (the rest is the test span)")
    p.add_argument("--skip-slam", action="store_true", help="no end-to-end slam runs")
    p.add_argument("--skip-kitti", action="store_true", help="TUM fr1_rpy only")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (slam runs)")
    p.set_defaults(func=execute)


def _slam_run(source: str, sensor: str, overrides: dict[str, Any], progress: bool
              ) -> dict[str, Any]:
    """ATE (SE(3)), fps and tracked share of one ``slam run``, in this process."""
    from slam.cli.run import alignment_for
    from slam.config import load_config
    from slam.eval.metrics import ate
    from slam.io.sources import open_source
    from slam.replay import run_offline

    cfg = load_config(None, overrides)
    src = open_source(source, sensor)
    try:
        assert src.calibration is not None
        result = run_offline(src, sensor, src.calibration, cfg,  # type: ignore[arg-type]
                             progress=progress)
        gt = src.ground_truth()
    finally:
        src.close()
    stats = dict(result.stats)
    out = {"fps": stats.get("fps"), "frames": stats.get("frames"),
           "tracked_frames": stats.get("tracked_frames"), "keyframes": stats.get("keyframes"),
           "track_ms_median": float(sorted(result.track_ms)[len(result.track_ms) // 2])
           if len(result.track_ms) else None}
    if gt is not None and len(result.trajectory):
        a = ate(gt, result.trajectory, alignment_for(sensor))  # type: ignore[arg-type]
        out["ate_rmse_m"] = a.rmse_m
    return out


def _slam_runs(tum: Path, progress: bool) -> dict[str, Any]:
    runs = {
        "orb": {},
        "learned": {"features.descriptor": "learned"},
        "learned+place": {"features.descriptor": "learned", "place.method": "learned"},
    }
    out = {}
    for name, overrides in runs.items():
        log.info("slam run, rgbd, %s", name)
        out[name] = _slam_run(f"tum:{tum}", "rgbd", overrides, progress)
    return out


def _descriptor(args: argparse.Namespace, split: Any) -> dict[str, Any]:
    from slam.features.learned import LearnedDescriptor
    from slam.learn.bench import descriptor_benchmark

    describer = LearnedDescriptor(args.descriptor_model or None)
    out = {"tum_fr1_rpy": descriptor_benchmark(f"tum:{args.datasets / TUM_RPY}", describer,
                                               split)}
    if not args.skip_kitti:
        out["kitti_06"] = descriptor_benchmark(f"kitti:{args.datasets / KITTI_06}", describer,
                                               split, gaps=(1, 2, 3), n_features=2000)
    return out


def _place(args: argparse.Namespace, split: Any) -> dict[str, Any]:
    from slam.learn.bench import load_place_frames, place_benchmark
    from slam.place.learned import LearnedPlaceRecognizer
    from slam.place.recognizer import load_vocabulary

    embedder = LearnedPlaceRecognizer(args.embedding_model or None)
    frames = load_place_frames(args.datasets / TUM_RPY, embedder, split)
    return place_benchmark(frames, load_vocabulary(args.vocabulary or None))


def _curves(out_png: Path) -> str | None:
    from slam.features.learned import models_dir
    from slam.learn.plot import plot_curves

    logs = {name: models_dir() / f"{name}.metrics.jsonl" for name in ("descriptor", "embedding")}
    logs = {k: v for k, v in logs.items() if v.is_file()}
    if not logs:
        return None
    plot_curves(logs, out_png)
    return str(out_png)


def headline(result: dict[str, Any]) -> dict[str, Any]:
    """The acceptance numbers: ``descriptor.precision_3px.{learned,orb}`` (and the
    position oracle's, ``.oracle``), ``descriptor.repeatability_3px``,
    ``descriptor.ms_per_1000_keypoints``, ``embedding.recall_at_1.{learned,bow}``."""
    tum = result["descriptor_detail"]["tum_fr1_rpy"]
    held_out = result["embedding_detail"]["test_span"]
    return {
        "descriptor": {
            "precision_1px": tum["precision_1px"], "precision_3px": tum["precision_3px"],
            "precision_5px": tum["precision_5px"],
            "repeatability_3px": tum.get("repeatability_3px", float("nan")),
            "ms_per_1000_keypoints": tum["ms_per_1000_keypoints"]["median_ms"],
            "net_ms_per_1000_keypoints": tum["net_ms_per_1000_keypoints"]["median_ms"],
        },
        "embedding": {
            "recall_at_1": {k: v["recall_at_1"] for k, v in held_out.items()},
            "recall_at_5": {k: v["recall_at_5"] for k, v in held_out.items()},
        },
    }


def table(result: dict[str, Any]) -> str:
    """A short plain-text summary."""
    d, e = result["descriptor"], result["embedding"]
    lines = [f"{'':34s}{'learned':>10s}{'ORB/BoW':>10s}"]
    for t in (1, 3, 5):
        p = d[f"precision_{t}px"]
        lines.append(f"{f'matching precision @{t}px (fr1_rpy test)':34s}"
                     f"{p['learned']:10.3f}{p['orb']:10.3f}")
    if "oracle" in d["precision_3px"]:
        oracle = " / ".join(f"{d[f'precision_{t}px']['oracle']:.3f}" for t in (1, 3, 5))
        lines.append(f"position oracle (mutual NN by true position) @1/3/5px: {oracle}; "
                     f"repeatability @3px {d['repeatability_3px']:.3f}")
    for k in (1, 5):
        r = e[f"recall_at_{k}"]
        lines.append(f"{f'place recall@{k} (fr1_rpy test)':34s}{r['learned']:10.3f}"
                     f"{r['bow']:10.3f}")
    lines.append(f"learned descriptor: {d['ms_per_1000_keypoints']:.1f} ms per 1000 keypoints "
                 f"(network {d['net_ms_per_1000_keypoints']:.1f} ms)")
    for name, run in result.get("slam", {}).items():
        ate = run.get("ate_rmse_m")
        lines.append(f"slam run rgbd fr1_rpy, {name:14s} ATE "
                     f"{'n/a' if ate is None else f'{ate:.4f} m'}, {run['fps']:.1f} fps, "
                     f"tracked {run['tracked_frames']}/{run['frames']}")
    return "\n".join(lines)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def execute(args: argparse.Namespace) -> int:
    """Run ``slam bench-learned``; see :func:`register` for the options."""
    import cv2

    from slam.learn.data import SplitSpec

    split = SplitSpec(*args.split)
    t0 = time.perf_counter()
    result: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, cv2 {cv2.__version__}, "
                   f"load average {os.getloadavg()[0]:.1f}",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "split": {"train": split.train, "val": split.val, "test": 1 - split.train - split.val},
    }
    result["descriptor_detail"] = _descriptor(args, split)
    result["embedding_detail"] = _place(args, split)
    result.update(headline(result))
    if not args.skip_slam:
        result["slam"] = _slam_runs(args.datasets / TUM_RPY, not args.no_progress)
    result["curves_png"] = _curves(args.out.with_suffix(".curves.png"))
    result["seconds"] = time.perf_counter() - t0
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(_clean(result), indent=2) + "\n")
    log.info("wrote %s", args.out)
    return 0

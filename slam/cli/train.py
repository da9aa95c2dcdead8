"""``slam train descriptor|embedding``: train our binary descriptor or place embedding on
sequences with ground truth, then export it to ONNX for ``cv2.dnn``.

PyTorch is imported only when the command runs (the ``train`` extra).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from slam.errors import ConfigError, SlamError

log = logging.getLogger(__name__)

TASKS = ("descriptor", "embedding")
MAX_GAP_BY_SCHEME = {"kitti": 5}  # 10 Hz driving: later frames share little


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/slam/learn`` (``~/.cache/slam/learn``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "slam" / "learn"


def register(commands: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
    """Add the ``train`` subparser to ``commands``."""
    p = commands.add_parser(
        "train", parents=list(parents), help="train the learned descriptor or place embedding",
        description="Train on sequences with ground-truth poses and depth (TUM RGB-D, KITTI "
        "stereo; others by homographic augmentation), split by time span, then export "
        "ONNX for cv2.dnn. Needs the 'train' extra (PyTorch).")
    p.add_argument("task", choices=TASKS)
    p.add_argument("--data", required=True, nargs="+", metavar="URI",
                   help="sources (tum:DIR, kitti:DIR, images:DIR, ...)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR",
                   help="run folder: checkpoints, metrics.jsonl, model.onnx")
    p.add_argument("--export", type=Path, metavar="FILE", help="also copy the ONNX model here")
    p.add_argument("--cache", type=Path, default=None, metavar="DIR",
                   help=f"patch cache (default {default_cache_dir()})")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=16)
    g.add_argument("--steps-per-epoch", type=int, default=50)
    g.add_argument("--batch-size", type=int, default=256)
    g.add_argument("--lr", type=float, default=2e-3)
    g.add_argument("--weight-decay", type=float, default=1e-4)
    g.add_argument("--optimizer", choices=("muon", "adamw"), default="muon")
    g.add_argument("--schedule", choices=("cosine", "plateau"), default="cosine")
    g.add_argument("--warmup", type=int, default=100, metavar="STEPS")
    g.add_argument("--clip", type=float, default=1.0, metavar="NORM")
    g.add_argument("--patience", type=int, default=6, metavar="EPOCHS",
                   help="early stop after this many epochs without a better val metric")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto", help="auto (GPU when there is one), cpu, cuda")
    g.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: steady on a shared machine; 0 = torch's)")
    d = p.add_argument_group("data")
    d.add_argument("--split", type=float, nargs=2, default=(0.7, 0.1), metavar=("TRAIN", "VAL"),
                   help="time-span shares of each sequence (the rest is test)")
    d.add_argument("--max-gap", type=int, default=20, help="frames between pair partners")
    d.add_argument("--max-frames", type=int, default=None, help="read at most N frames")
    t = p.add_argument_group("task")
    t.add_argument("--margin", type=float, default=0.2, help="triplet margin (share of bits)")
    t.add_argument("--mining", choices=("semihard", "hardest"), default="semihard")
    t.add_argument("--near", type=float, default=1.0,
                   help="weight of the spatially close negative (descriptor)")
    t.add_argument("--balance", type=float, default=0.1, help="weight of the bit balance")
    t.add_argument("--widths", type=int, nargs=2, default=(24, 48), metavar=("C8", "C4"),
                   help="descriptor channels at 8x8 and 4x4")
    t.add_argument("--patch-support", type=float, default=48.0, metavar="PX",
                   help="pixels of the pyramid level a descriptor patch spans (ORB: 31)")
    t.add_argument("--temperature", type=float, default=0.1, help="NT-Xent temperature")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=execute)


def _import_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise SlamError("training needs PyTorch: pip install 'pyslam-service[train]' "
                        "(CPU wheel: pip install torch==2.13.0)") from exc


def _load(args: argparse.Namespace) -> tuple[Any, Any]:
    from slam.learn.data import SplitSpec
    from slam.learn.datasets import BuildParams, FrameSet, PatchPairs, load_sets

    try:
        split = SplitSpec(*args.split)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    pairs, frames = [], []
    for uri in args.data:
        gap = min(args.max_gap, MAX_GAP_BY_SCHEME.get(uri.partition(":")[0], args.max_gap))
        params = BuildParams(max_gap=gap, split=split, max_frames=args.max_frames,
                             seed=args.seed, patch_support=args.patch_support)
        p, f = load_sets([uri], params, args.cache or default_cache_dir(),
                         progress=not args.no_progress)
        pairs.append(p)
        frames.append(f)
    return PatchPairs.concat(pairs), FrameSet.concat(frames)


def execute(args: argparse.Namespace) -> int:
    """Run ``slam train``; see :func:`register` for the options."""
    _import_torch()
    from slam.learn import export, models, tasks
    from slam.learn.plot import plot_curves
    from slam.learn.train import TrainConfig, fit

    cfg = TrainConfig(epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                      batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                      optimizer=args.optimizer, schedule=args.schedule,
                      warmup_steps=args.warmup, clip_grad_norm=args.clip,
                      patience=args.patience, seed=args.seed, device=args.device,
                      threads=args.threads)
    pairs, frames = _load(args)
    from slam.learn.train import seed_everything

    seed_everything(args.seed)  # the same initial weights for the same seed
    task: Any
    if args.task == "descriptor":
        cfg.extra = {"margin": args.margin, "mining": args.mining, "near": args.near,
                     "balance": args.balance}
        net = models.DescriptorNet(tuple(args.widths), support=args.patch_support)
        task = tasks.DescriptorTask(pairs, net, args.margin, args.mining, args.balance,
                                    near=args.near)
        data_info = {"train_pairs": int((pairs.split == 0).sum()),
                     "val_pairs": int((pairs.split == 1).sum())}
    else:
        cfg.extra = {"temperature": args.temperature}
        task = tasks.EmbeddingTask(frames, models.EmbeddingNet(), args.temperature)
        data_info = {"train_frames": int((frames.split == 0).sum()),
                     "val_frames": int((frames.split == 1).sum())}
    summary = fit(task, cfg, args.out, progress=not args.no_progress)
    meta = {"data": list(args.data), "split": list(args.split), **data_info,
            "best_epoch": summary["best_epoch"],
            "val": {k: v for k, v in summary["best"].items() if k.startswith("val_")},
            "train_seconds": round(summary["seconds"], 1), "device": summary["device"],
            "config": summary["config"]}
    onnx_path = args.out / "model.onnx"
    exporter = export.export_descriptor if args.task == "descriptor" else export.export_embedding
    err = exporter(task.model, onnx_path, meta)
    if args.export is not None:
        exporter(task.model, args.export, meta)
    plot_curves({args.task: args.out / "metrics.jsonl"}, args.out / "curves.png")
    (args.out / "summary.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"{args.task}: best epoch {summary['best_epoch']} of {summary['epochs_run']}, "
          f"val metric {summary['best'].get('val_metric', float('nan')):.4f}, "
          f"{summary['seconds']:.0f} s on {summary['device']}; wrote {onnx_path}"
          + (f" and {args.export}" if args.export else "") + f" (cv2.dnn max error {err:.1e})")
    return 0

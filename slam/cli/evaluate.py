"""``slam eval``: ATE of an estimated trajectory file against a ground-truth file."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from slam.io.types import Trajectory

log = logging.getLogger(__name__)

FORMATS = ("tum", "kitti")
ALIGNMENTS = ("se3", "sim3", "origin", "none")


def register(commands: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
    """Add the ``eval`` subparser to ``commands`` (an argparse subparsers action)."""
    p = commands.add_parser(
        "eval",
        parents=list(parents),
        help="evaluate a trajectory against ground truth (ATE with evo)",
        description="Absolute trajectory error, translation part, after SE(3) alignment "
        "(or Sim(3) with --sim3, for monocular runs). Poses are associated by timestamp "
        "(TUM) or by line number (KITTI).",
    )
    p.add_argument("--gt", required=True, type=Path, metavar="FILE", help="ground truth")
    p.add_argument("--est", required=True, type=Path, metavar="FILE", help="estimate")
    p.add_argument("--format", choices=FORMATS, default="tum", help="format of both files")
    align = p.add_mutually_exclusive_group()
    align.add_argument(
        "--sim3",
        action="store_const",
        const="sim3",
        dest="align",
        help="align with scale (monocular)",
    )
    align.add_argument("--align", choices=ALIGNMENTS, dest="align", help="alignment")
    p.add_argument(
        "--max-diff",
        type=float,
        default=0.01,
        metavar="S",
        help="largest time difference of associated poses, seconds",
    )
    p.add_argument("--plot", type=Path, metavar="PNG", help="draw both trajectories here")
    p.set_defaults(func=execute, align="se3")


def read_trajectory(path: Path, fmt: str) -> Trajectory:
    """Read a TUM or KITTI trajectory file (KITTI rows are stamped by their index)."""
    from slam.io import trajectory_io

    if fmt == "tum":
        return trajectory_io.read_tum_trajectory(path)
    return trajectory_io.read_kitti_poses(path)


def report_lines(result: Any) -> list[str]:
    """The lines ``slam eval`` prints for an :class:`AteResult`."""
    lines = [
        f"ATE rmse {result.rmse_m:.4f} m | mean {result.mean_m:.4f} m | "
        f"median {result.median_m:.4f} m | max {result.max_m:.4f} m",
        f"{result.n_matched} matched poses, {result.alignment} alignment"
        + (f", scale {result.scale:.4f}" if result.alignment == "sim3" else ""),
    ]
    return lines


def execute(args: argparse.Namespace) -> int:
    """Run ``slam eval``; see :func:`register` for the options."""
    from slam.eval.metrics import ate

    gt = read_trajectory(args.gt, args.format)
    est = read_trajectory(args.est, args.format)
    result = ate(gt, est, args.align, max_diff_s=args.max_diff)
    if args.plot is not None:
        from slam.eval.plot import plot_trajectories

        title = f"{args.est.name} vs {args.gt.name} - ATE {result.rmse_m:.4f} m ({args.align})"
        plot_trajectories(args.plot, gt, result.est_aligned, title, errors_m=result.errors_m)
    for line in report_lines(result):
        print(line)
    return 0

"""``slam run``: track a sequence, write the trajectory, stats, ATE and a plot."""

from __future__ import annotations

import argparse
import json
import logging
import math
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slam.config import SENSORS, parse_overrides
from slam.errors import CalibrationError, ConfigError, SensorError, SlamError

if TYPE_CHECKING:
    from slam.eval.metrics import AteResult
    from slam.io.types import Trajectory

log = logging.getLogger(__name__)

FORMATS = ("tum", "kitti")


def alignment_for(sensor: str) -> str:
    """The ATE alignment of the usual protocol: Sim(3) for monocular, SE(3) otherwise."""
    return "sim3" if sensor == "mono" else "se3"


def register(commands: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
    """Add the ``run`` subparser to ``commands`` (an argparse subparsers action)."""
    p = commands.add_parser(
        "run",
        parents=list(parents),
        help="run SLAM on a sequence",
        description="Track a sequence, write the trajectory (world-from-camera) and, "
        "when the source has ground truth, print its ATE.",
        epilog="URIs: tum:<folder>, kitti:<sequence folder>, video/image folders and "
        "synthetic:<name>, as the installed sources accept.",
    )
    p.add_argument("--source", required=True, metavar="URI", help="sequence to read")
    p.add_argument("--sensor", required=True, choices=SENSORS)
    p.add_argument(
        "--calib",
        type=Path,
        metavar="FILE",
        help="ORB-SLAM settings YAML; default: the source's own calibration",
    )
    p.add_argument("--config", type=Path, metavar="FILE", help="configuration YAML")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, e.g. features.n_features=1500",
    )
    p.add_argument("--out", required=True, type=Path, metavar="TRAJ", help="trajectory file")
    p.add_argument("--format", choices=FORMATS, default="tum", help="trajectory format")
    p.add_argument("--stats", type=Path, metavar="JSON", help="write run statistics here")
    p.add_argument("--plot", type=Path, metavar="PNG", help="draw the trajectory here")
    p.add_argument("--profile", action="store_true",
                   help="print where the time went: per thread and stage, runs, median, "
                   "p99 and total (also in --stats as 'stages')")
    p.add_argument("--fps", type=float, help="frame rate of video: and images: sources")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    p.add_argument("--skip-frames", metavar="START:STOP[:BLANK]",
                   help="leave out frames START..STOP-1, the first BLANK of them shown "
                   "black (a kidnapped camera)")
    p.add_argument(
        "--realtime",
        action="store_true",
        help="replay at the source's frame rate, dropping frames when late",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--strict", action="store_true",
                   help="refuse frames whose timestamp does not increase (exit 3) instead "
                   "of skipping them with a warning")
    p.add_argument("--features", choices=("orb", "learned"),
                   help="keypoint descriptors: ORB's, or the learned network's (slam/data/models/)")
    p.add_argument("--place", choices=("bow", "learned"),
                   help="place recognition: bag of words, or the learned embedding")
    p.add_argument("--no-loop", action="store_true", help="no loop closing (place "
                   "recognition still serves relocalisation)")
    p.add_argument("--save-map", type=Path, metavar="FILE",
                   help="write the final map here (atomically; see docs/map_format.md)")
    p.add_argument("--load-map", type=Path, metavar="FILE",
                   help="start from this map; the first frame relocalises in it")
    p.add_argument("--localize", action="store_true",
                   help="with --load-map: track against the map without changing it")
    p.add_argument("--dense", nargs="?", const="", type=str, metavar="MESH",
                   help="fuse the keyframes into a TSDF mesh while running (rgbd/stereo; "
                   "needs the 'dense' extra, Open3D); written to MESH (default: beside "
                   "--out, <name>.mesh.ply) with a picture <MESH name>.png")
    p.set_defaults(func=execute)


def write_trajectory(path: Path, trajectory: Trajectory, fmt: str) -> None:
    """Write ``trajectory`` as TUM or KITTI, creating the parent folder."""
    from slam.io import trajectory_io

    writer = (
        trajectory_io.write_tum_trajectory if fmt == "tum" else trajectory_io.write_kitti_trajectory
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        writer(path, trajectory)
    except OSError as exc:
        raise SlamError(f"cannot write trajectory {path}: {exc.strerror or exc}") from exc
    log.info("wrote %d poses to %s (%s)", len(trajectory), path, fmt)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON; NaN and infinities become ``null``."""
    clean = {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in data.items()
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(clean, indent=2, sort_keys=True) + "\n")
    except OSError as exc:
        raise SlamError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _open(args: argparse.Namespace) -> tuple[Any, Any]:
    """Open the source; its calibration comes from ``--calib`` when given, else its own."""
    from slam.io.sources import LimitedSource, SkippedSpanSource, open_source

    if args.max_frames is not None and args.max_frames < 1:
        raise ConfigError("--max-frames must be at least 1")
    calib_path = str(args.calib) if args.calib is not None else None
    source: Any = open_source(args.source, args.sensor, calib_path, args.fps)
    if args.sensor not in source.sensors:
        raise SensorError(f"{source.name} feeds {sorted(source.sensors)}, not {args.sensor}")
    if source.calibration is None:
        raise CalibrationError(f"{source.name} has no calibration: pass one with --calib")
    if getattr(args, "skip_frames", None):
        parts = str(args.skip_frames).split(":")
        if len(parts) not in (2, 3) or not all(x.isdigit() for x in parts):
            raise ConfigError(f"--skip-frames wants START:STOP[:BLANK], got "
                              f"{args.skip_frames!r}")
        source = SkippedSpanSource(source, *(int(x) for x in parts))
    if args.max_frames is not None:
        source = LimitedSource(source, args.max_frames)
    return source, source.calibration


def _evaluate(gt: Trajectory | None, est: Trajectory, sensor: str) -> AteResult | None:
    from slam.errors import EvaluationError
    from slam.eval.metrics import ate

    if gt is None or len(est) == 0:
        return None
    try:
        return ate(gt, est, alignment_for(sensor))  # type: ignore[arg-type]
    except EvaluationError as exc:
        log.warning("no ATE: %s", exc)
        return None


def build_stats(
    result: Any, sensor: str, source_name: str, ate_result: AteResult | None
) -> dict[str, Any]:
    """Stats of ``result`` (a ``RunResult``) plus memory, latency percentiles and ATE."""
    from slam.runstats import latency_summary, peak_rss_mb

    stats: dict[str, Any] = {"source": source_name, "sensor": sensor, **result.stats}
    if len(result.track_ms):
        for key, value in latency_summary(result.track_ms).items():
            stats[f"track_ms_{key}"] = value
    frames = int(stats.get("frames", 0))
    stats["tracked_ratio"] = stats.get("tracked_frames", 0) / frames if frames else 0.0
    stats["peak_rss_mb"] = peak_rss_mb()  # the process's peak so far, after the replay's
    stats["loops"] = [vars(e) for e in getattr(result, "loops", [])]
    if ate_result is not None:
        stats.update(
            ate_rmse_m=ate_result.rmse_m,
            ate_mean_m=ate_result.mean_m,
            ate_median_m=ate_result.median_m,
            ate_max_m=ate_result.max_m,
            ate_n_matched=ate_result.n_matched,
            ate_alignment=ate_result.alignment,
            ate_scale=ate_result.scale,
        )
    return stats


def summary_line(stats: dict[str, Any]) -> str:
    """One line: ATE, speed, share of frames tracked, latency, memory."""
    parts = [f"{stats['source']} {stats['sensor']}:"]
    if stats.get("ate_rmse_m") is not None:
        parts.append(
            f"ATE {stats['ate_rmse_m']:.4f} m ({stats['ate_alignment']}, "
            f"{stats['ate_n_matched']} poses) |"
        )
    else:
        parts.append("ATE n/a |")
    parts.append(f"{stats.get('fps', float('nan')):.1f} fps (feeding loop; "
                 f"{stats.get('wall_s', float('nan')):.1f} s in all) |")
    parts.append(
        f"tracked {100 * stats['tracked_ratio']:.1f} % "
        f"({stats.get('tracked_frames', 0)}/{stats.get('frames', 0)}) |"
    )
    parts.append(
        f"track {stats.get('track_ms_median', float('nan')):.1f} ms median, "
        f"{stats.get('track_ms_p95', float('nan')):.1f} ms p95 |"
    )
    if stats.get("loops_closed") or stats.get("relocalisations"):
        parts.append(f"loops {stats.get('loops_closed', 0)}, "
                     f"relocalised {stats.get('relocalisations', 0)} |")
    parts.append(f"peak {stats['peak_rss_mb']:.0f} MB")
    return " ".join(parts)


def _plot(
    path: Path, gt: Trajectory | None, est: Trajectory, ate_result: AteResult | None, title: str,
    loops: Sequence[Any] = (),
) -> None:
    from slam.eval.plot import plot_trajectories

    if len(est) == 0:
        log.warning("nothing tracked: no plot")
        return
    markers = {}
    if loops:
        markers = {"loop closed": [e.stamp for e in loops],
                   "loop matched": [e.loop_stamp for e in loops]}
    if ate_result is None:
        plot_trajectories(path, gt, est, title, markers=markers)
        return
    title += f" - ATE {ate_result.rmse_m:.4f} m ({ate_result.alignment})"
    plot_trajectories(path, gt, ate_result.est_aligned, title, markers=markers,
                      errors_m=ate_result.errors_m)


def _load_map(args: argparse.Namespace, calibration: Any) -> Any:
    """The map of ``--load-map`` (checked against the camera and sensor), or None."""
    if args.localize and args.load_map is None:
        raise ConfigError("--localize needs --load-map")
    if args.load_map is None:
        return None
    from slam.map.persistence import load_map

    loaded = load_map(args.load_map, calibration=calibration, sensor=args.sensor)
    return loaded.map


def _dense_options(args: argparse.Namespace) -> Any:
    """The ``DenseOptions`` of ``--dense`` (checked before any frame is read), or None."""
    if getattr(args, "dense", None) is None:
        return None
    import importlib.util

    from slam.dense import require_open3d
    from slam.dense.worker import DenseOptions

    if args.sensor not in ("rgbd", "stereo"):
        raise SensorError(f"--dense needs depth: an rgbd or stereo sensor, not {args.sensor}")
    if importlib.util.find_spec("open3d") is None:
        require_open3d("--dense")  # raises Open3DMissingError, with the install command
    mesh = Path(args.dense) if args.dense else args.out.with_suffix(".mesh.ply")
    try:
        mesh.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SlamError(f"cannot create {mesh.parent}: {exc.strerror or exc}") from exc
    return DenseOptions(mesh_path=mesh)


def execute(args: argparse.Namespace) -> int:
    """Run ``slam run``; see :func:`register` for the options.

    Ctrl-C, SIGTERM or a frame that cannot be read stop the replay between frames;
    the trajectory, stats, plot and ATE of the frames processed so far are still
    written, one line on stderr says so, and the exit status is 130, 143 or the
    data error's (3). A second Ctrl-C aborts at once.
    """
    from slam.config import load_config

    overrides = parse_overrides(args.overrides)
    if args.no_loop:
        overrides["loop.enabled"] = False
    if getattr(args, "features", None):
        overrides["features.descriptor"] = args.features
    if getattr(args, "place", None):
        overrides["place.method"] = args.place
    config = load_config(args.config, overrides)
    source, calibration = _open(args)
    from slam import replay  # after the inputs are checked: errors come fast

    with replay.stop_on_signals(replay.ReplayStop()) as stop:
        try:
            initial_map = _load_map(args, calibration)
            dense = _dense_options(args)
            extra = {"dense": dense} if dense is not None else {}
            gt = source.ground_truth()
            log.info(
                "%s: %s frames, sensor %s", source.name, getattr(source, "length", None),
                args.sensor,
            )
            result = replay.run_offline(
                source,
                args.sensor,
                calibration,
                config,
                realtime=args.realtime,
                progress=not args.no_progress,
                initial_map=initial_map,
                localization_only=args.localize,
                save_map=args.save_map,
                stop=stop,
                strict_stamps=getattr(args, "strict", False),
                partial_on_error=True,
                **extra,
            )
        finally:
            close = getattr(source, "close", None)
            if callable(close):
                close()
        _write_outputs(args, result, gt, str(source.name))
    return _ending(args, result, getattr(source, "length", None))


def _write_outputs(args: argparse.Namespace, result: Any, gt: Trajectory | None,
                   name: str) -> None:
    """Trajectory, stats, plot and the summary line (stdout) of a replay, complete or not."""
    est = result.trajectory
    write_trajectory(args.out, est, args.format)
    ate_result = _evaluate(gt, est, args.sensor)
    stats = build_stats(result, args.sensor, name, ate_result)
    if args.stats is not None:
        write_json(args.stats, stats)
    if args.plot is not None:
        _plot(args.plot, gt, est, ate_result, f"{name} ({args.sensor})", result.loops)
    print(summary_line(stats), flush=True)
    if args.profile:
        from slam.stages import format_stages

        print(format_stages(stats.get("stages", {}), float(stats.get("wall_s", 0.0))),
              flush=True)
    d = getattr(result, "dense", None)
    if d is not None:
        print(f"mesh {d.mesh_path}: {d.n_vertices} vertices, {d.n_triangles} triangles from "
              f"{d.n_keyframes} keyframes" + (f"; picture {d.png_path}" if d.png_path else ""),
              flush=True)


SIGNAL_EXIT = {"sigint": 128 + signal.SIGINT, "sigterm": 128 + signal.SIGTERM}  # 130, 143


def _ending(args: argparse.Namespace, result: Any, total: int | None) -> int:
    """Exit status of a replay whose outputs are written; an early stop says so on stderr
    in one line (a data error as that error, for the ``slam: error:`` line)."""
    stopped = getattr(result, "stopped", "completed")
    if stopped == "completed":
        return 0
    read = int(getattr(result, "frames_read", 0))
    where = f"after {read} of {total} frames" if total is not None else f"after {read} frames"
    wrote = f"wrote {len(result.trajectory)} poses to {args.out}"
    error = getattr(result, "error", None)
    if error is not None:
        raise type(error)(f"{error}; stopped {where}, {wrote}") from error
    print(f"slam: stopped by {stopped.upper()} {where}; {wrote}", file=sys.stderr, flush=True)
    return SIGNAL_EXIT.get(stopped, 1)

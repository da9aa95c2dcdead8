"""Speed beside ORB-SLAM3: fps, ATE and where our time goes, per sequence x sensor.

Usage: ``python -m benchmarks.bench_speed --rounds 2 --out results``.

Each round runs every case twice, interleaved: ours (``slam run --stats``, in its own
process, after an untimed warm-up that fills Numba's cache) and ORB-SLAM3 from its PyPI
wheel (``../shared/peers/orbslam3``: its own venv, set up by its ``setup.sh``; a measuring
instrument, never a dependency). Both count fps over the feeding loop, image reading
included. ATE is ours for both trajectories (SE(3) alignment for stereo and RGB-D,
Sim(3) for monocular). The ratio ``ours / ORB-SLAM3`` of each round is what carries
over to another machine; absolute fps do not. Our per-stage timings (``slam run
--profile``) are reported as milliseconds per frame: a stage's total over the run
divided by the frames (a keyframe stage spread over all frames), per thread.
Results go to ``speed.json`` and ``speed.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.run_matrix import (
    DEFAULT_DATASETS,
    KITTI_06,
    REPO,
    TUM_RPY,
    WARMUP_FRAMES,
    Case,
    machine,
    resolve,
    run_for_stats,
    run_once,
)

log = logging.getLogger("benchmarks.bench_speed")

PEER = REPO.parent / "shared" / "peers" / "orbslam3"
PEER_HOME = Path(os.environ.get("ORBSLAM3_PEER", Path.home() / ".cache" / "orbslam3-peer"))


@dataclass(frozen=True)
class SpeedCase:
    """A matrix case and the ORB-SLAM3 settings file that describes its camera."""

    case: Case
    settings: str  # file name in the peer's settings/


CASES = (
    SpeedCase(Case("tum_fr1_rpy/rgbd", "tum:{datasets}/" + TUM_RPY, "rgbd", TUM_RPY),
              "RGBD_TUM1.yaml"),
    SpeedCase(Case("tum_fr1_rpy/mono", "tum:{datasets}/" + TUM_RPY, "mono", TUM_RPY),
              "Monocular_TUM1.yaml"),
    SpeedCase(Case("kitti_06/stereo", "kitti:{datasets}/" + KITTI_06, "stereo", KITTI_06),
              "Stereo_KITTI04-12_1226x370.yaml"),
)
# The stages shown in the Markdown table (thread, stage); every stage is in the JSON.
SHOWN_STAGES = (
    ("features", "orb"), ("features", "orb_right"), ("features", "stereo_match"),
    ("tracking", "pose"), ("tracking", "local_map"), ("tracking", "subpixel"),
    ("tracking", "keyframe"), ("tracking", "wait_mapping"),
    ("mapping", "triangulate"), ("mapping", "fuse"), ("mapping", "local_ba"),
    ("mapping", "cull_keyframes"), ("loop closing", "verify"),
)


def peer_ready() -> bool:
    """Whether the ORB-SLAM3 peer's venv and vocabulary are there."""
    return (PEER_HOME / "venv" / "bin" / "python").is_file() and \
        (PEER_HOME / "ORBvoc_sub.txt").is_file()


def run_peer(sc: SpeedCase, run_dir: Path, datasets: Path, timeout_s: float) -> dict[str, Any]:
    """One ORB-SLAM3 run; its stats with ``ate_rmse_m`` added, or ``{"error": ...}``."""
    python = PEER_HOME / "venv" / "bin" / "python"
    vocab = PEER_HOME / "ORBvoc_sub.txt"
    if not peer_ready():
        return {"error": f"ORB-SLAM3 peer not set up ({PEER_HOME}); run {PEER}/setup.sh"}
    case = resolve(sc.case, datasets)
    traj, stats_path = run_dir / "trajectory.txt", run_dir / "stats.json"
    cmd = [str(python), str(PEER / "run_orbslam3.py"), "--sensor", case.sensor,
           "--source", case.source, "--settings", str(PEER / "settings" / sc.settings),
           "--out", str(traj), "--json", str(stats_path), "--vocab", str(vocab)]
    stats = run_for_stats(cmd, run_dir, stats_path, timeout_s)
    if "error" not in stats:
        stats["ate_rmse_m"] = _ate(case, traj)
    return stats


def _ate(case: Case, traj: Path) -> float | None:
    """ATE RMSE (m) of a TUM trajectory file against the case's ground truth."""
    from slam.cli.run import alignment_for
    from slam.errors import SlamError
    from slam.eval.metrics import ate
    from slam.io.sources import open_source
    from slam.io.trajectory_io import read_tum_trajectory

    try:
        gt = open_source(case.source, case.sensor).ground_truth()
        if gt is None:
            return None
        return float(ate(gt, read_tum_trajectory(traj),
                         alignment_for(case.sensor)).rmse_m)  # type: ignore[arg-type]
    except SlamError as exc:
        log.warning("%s: no ATE for ORB-SLAM3: %s", case.name, exc)
        return None


def stage_ms_per_frame(stats: dict[str, Any]) -> dict[str, float]:
    """``"thread/stage"`` -> milliseconds per frame (the stage's total over the frames)."""
    frames = max(int(stats.get("frames", 0)), 1)
    return {f"{thread}/{name}": 1e3 * s["total_s"] / frames
            for thread, by_stage in stats.get("stages", {}).items()
            for name, s in by_stage.items()}


def _med(values: Sequence[float | None]) -> float | None:
    ok = [v for v in values if v is not None]
    return statistics.median(ok) if ok else None


def aggregate(sc: SpeedCase, ours: list[dict[str, Any]], peer: list[dict[str, Any]]
              ) -> dict[str, Any]:
    """One row: medians over the rounds, and each round's fps ratio."""
    ok_o = [r for r in ours if "error" not in r]
    ok_p = [r for r in peer if "error" not in r]
    ratios = [o["fps"] / p["fps"] for o, p in zip(ours, peer)
              if "error" not in o and "error" not in p and p.get("fps")]
    stages: dict[str, float | None] = {}
    per_run = [stage_ms_per_frame(r) for r in ok_o]
    for key in sorted({k for d in per_run for k in d}):
        stages[key] = _med([d.get(key) for d in per_run])
    return {
        "case": sc.case.name, "rounds": len(ours),
        "ours_fps": _med([r["fps"] for r in ok_o]),
        "orbslam3_fps": _med([r["fps"] for r in ok_p]),
        "fps_ratio_per_round": ratios, "fps_ratio": _med(ratios),
        "ours_ate_m": _med([r.get("ate_rmse_m") for r in ok_o]),
        "orbslam3_ate_m": _med([r.get("ate_rmse_m") for r in ok_p]),
        "ours_tracked": _med([r.get("tracked_ratio") for r in ok_o]),
        "orbslam3_tracked": _med([r["tracked_frames"] / r["frames"] for r in ok_p]),
        "ours_keyframes": _med([r.get("keyframes") for r in ok_o]),
        "orbslam3_keyframes": _med([r.get("keyframes") for r in ok_p]),
        "ours_track_ms_median": _med([r.get("track_ms_median") for r in ok_o]),
        "ours_track_ms_p99": _med([r.get("track_ms_p99") for r in ok_o]),
        "ours_peak_rss_mb": max((r.get("peak_rss_mb", 0.0) for r in ok_o), default=None),
        "ours_startup_s": _med([r.get("startup_s") for r in ok_o]),
        "stage_ms_per_frame": stages,
        "errors": [r["error"] for r in ours + peer if "error" in r],
    }


def _f(v: float | None, spec: str, scale: float = 1.0) -> str:
    return "–" if v is None else format(v * scale, spec)


def markdown(rows: Sequence[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The speed table and the stage table."""
    lines = [f"Speed beside ORB-SLAM3 ({meta['rounds']} interleaved rounds, {meta['machine']}, "
             f"{meta['date']}); medians over the rounds.", "",
             "| case | ours fps | ORB-SLAM3 fps | ratio (per round) | ours ATE | ORB-SLAM3 ATE "
             "| keyframes ours / ORB-SLAM3 | track median / p99 | peak RSS |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        per_round = ", ".join(f"{x:.2f}" for x in r["fps_ratio_per_round"])
        lines.append(
            f"| {r['case']} | {_f(r['ours_fps'], '.1f')} | {_f(r['orbslam3_fps'], '.1f')} "
            f"| **{_f(r['fps_ratio'], '.2f')}** ({per_round}) "
            f"| {_f(r['ours_ate_m'], '.2f', 100)} cm | {_f(r['orbslam3_ate_m'], '.2f', 100)} cm "
            f"| {_f(r['ours_keyframes'], '.0f')} / {_f(r['orbslam3_keyframes'], '.0f')} "
            f"| {_f(r['ours_track_ms_median'], '.1f')} / {_f(r['ours_track_ms_p99'], '.1f')} ms "
            f"| {_f(r['ours_peak_rss_mb'], '.0f')} MB |")
    lines += ["", "Our time per frame by stage (ms; a stage's total over the run / frames; "
              "threads run concurrently, so rows add up to more than the wall time):", "",
              "| stage | " + " | ".join(r["case"] for r in rows) + " |",
              "|---|" + "---|" * len(rows)]
    for thread, name in SHOWN_STAGES:
        key = f"{thread}/{name}"
        lines.append(f"| {key} | " + " | ".join(
            _f(r["stage_ms_per_frame"].get(key), ".2f") for r in rows) + " |")
    errors = [f"- {r['case']}: {e}" for r in rows for e in r["errors"]]
    if errors:
        lines += ["", "Failed runs:", *errors]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_speed", description=__doc__)
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds")
    p.add_argument("--out", type=Path, default=Path("results"), help="output folder")
    p.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS, help="shared datasets")
    p.add_argument("--only", action="append", default=[], metavar="TEXT",
                   help="only cases whose name contains TEXT (repeatable)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    p.add_argument("--no-peer", action="store_true", help="ours only (no ORB-SLAM3)")
    p.add_argument("-v", "--verbose", action="count", default=0)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the rounds; 0 when every run of ours and of the peer succeeded."""
    from slam.cli.main import configure_logging

    args = parse_args(argv)
    configure_logging(args.verbose)
    if not args.no_peer and not peer_ready():
        log.warning("ORB-SLAM3 peer not set up (%s; bash %s/setup.sh): ours only", PEER_HOME,
                    PEER)
        args.no_peer = True
    datasets = args.datasets.resolve()
    cases = [c for c in CASES if not args.only or any(t in c.case.name for t in args.only)]
    cases = [c for c in cases if (datasets / str(c.case.folder)).is_dir()]
    ours: dict[str, list[dict[str, Any]]] = {c.case.name: [] for c in cases}
    peer: dict[str, list[dict[str, Any]]] = {c.case.name: [] for c in cases}
    for sc in cases:
        run_once(resolve(sc.case, datasets), args.out / "speed" / sc.case.name / "warmup",
                 args.timeout, ["--max-frames", str(WARMUP_FRAMES)])
    for i in range(args.rounds):
        for sc in cases:
            name = sc.case.name
            o = run_once(resolve(sc.case, datasets), args.out / "speed" / name / f"ours{i}",
                         args.timeout, [])
            ours[name].append(o)
            p = ({"error": "--no-peer"} if args.no_peer else
                 run_peer(sc, args.out / "speed" / name / f"orbslam3{i}", datasets, args.timeout))
            peer[name].append(p)
            log.info("round %d %s: ours %.1f fps ATE %s | ORB-SLAM3 %s fps ATE %s", i + 1, name,
                     o.get("fps", float("nan")), o.get("ate_rmse_m"), p.get("fps"),
                     p.get("ate_rmse_m"))
    rows = [aggregate(sc, ours[sc.case.name], [] if args.no_peer else peer[sc.case.name])
            for sc in cases]
    meta = {"rounds": args.rounds, "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M")}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "speed.json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    (args.out / "speed.md").write_text(markdown(rows, meta))
    print(markdown(rows, meta), flush=True)
    return 0 if all(not r["errors"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

"""The sequence x sensor benchmark matrix.

Usage: ``python -m benchmarks.run_matrix --runs 3 --out results``.

Each configuration runs ``--runs`` times, each in its own process through
``slam run ... --stats``, so that peak memory and start-up are those a user sees.
Per configuration we report the median ATE RMSE (SE(3) alignment for stereo and
RGB-D, Sim(3) for monocular, the protocol of the published tables), the median
share of frames tracked, fps, tracking latency (median of the per-run median and
95th percentile) and the largest peak RSS. Results go to ``matrix.json`` and
``matrix.md``, next to the figures others published (:data:`PUBLISHED`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("benchmarks.run_matrix")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATASETS = REPO.parent / "shared" / "datasets"
TUM_RPY = "tum/rgbd_dataset_freiburg1_rpy"
KITTI_06 = "kitti/sequences/06"


@dataclass(frozen=True)
class Case:
    """One cell of the matrix: a sequence read as one sensor."""

    name: str  # e.g. "tum_fr1_rpy/rgbd"
    source: str  # URI for ``slam run --source``
    sensor: str
    folder: str | None = None  # dataset folder (relative to --datasets) that must exist


@dataclass(frozen=True)
class Published:
    """What others report for a configuration; protocols differ, so say how."""

    figure: str
    source: str


# Copied from ../shared/datasets/README.md ("What others report").
PUBLISHED: dict[str, Published] = {
    "tum_fr1_rpy/mono": Published(
        "ATE (Sim(3)) DROID-SLAM 2.6 cm, DPVO 4.5 cm, ORB-SLAM3 fails",
        "DROID-SLAM paper table; DPVO logs",
    ),
    "tum_fr1_rpy/rgbd": Published(
        "no fr1_rpy figure; ORB-SLAM2 RGB-D ATE fr1_desk 1.6 cm; tracking 25.6 ms/frame "
        "(1000 ORB, i7-4790)",
        "ORB-SLAM2, T-RO 2017, Tables III and IV (median of 5 runs)",
    ),
    "kitti_06/stereo": Published(
        "ORB-SLAM2, whole sequence: ATE 0.8 m, t_rel 0.51 % (ours: frames 0-50 only)",
        "ORB-SLAM2, T-RO 2017, Table I",
    ),
}

SYNTHETIC = ("loop", "forward", "sideways")
WARMUP_FRAMES = 10  # enough to compile (and cache) the Numba kernels of the sensor


def default_cases() -> list[Case]:
    """The shared real sequences in every sensor they support, then the synthetic ones."""
    cases = [
        Case("tum_fr1_rpy/rgbd", "tum:{datasets}/" + TUM_RPY, "rgbd", TUM_RPY),
        Case("tum_fr1_rpy/mono", "tum:{datasets}/" + TUM_RPY, "mono", TUM_RPY),
        Case("kitti_06/stereo", "kitti:{datasets}/" + KITTI_06, "stereo", KITTI_06),
        Case("kitti_06/mono", "kitti:{datasets}/" + KITTI_06, "mono", KITTI_06),
    ]
    for name in SYNTHETIC:
        for sensor in ("rgbd", "stereo", "mono"):
            cases.append(Case(f"synthetic_{name}/{sensor}", f"synthetic:{name}", sensor))
    return cases


def resolve(case: Case, datasets: Path) -> Case:
    """The case with ``{datasets}`` in its URI replaced by the datasets folder."""
    return Case(case.name, case.source.format(datasets=datasets), case.sensor, case.folder)


def unavailable(case: Case, datasets: Path) -> str | None:
    """Why ``case`` cannot run here (missing data, unknown URI scheme), or None."""
    if case.folder is not None:
        folder = datasets / case.folder
        return None if folder.is_dir() else f"{folder} not found"
    from slam.errors import SlamError
    from slam.io.sources import open_source

    try:
        source = open_source(case.source, case.sensor, None)
    except SlamError as exc:
        return str(exc)
    close = getattr(source, "close", None)
    if callable(close):
        close()
    return None


def run_for_stats(cmd: Sequence[str], run_dir: Path, stats_path: Path, timeout_s: float
                  ) -> dict[str, Any]:
    """Run ``cmd`` (a process that writes a stats JSON to ``stats_path``) in ``run_dir``'s
    name: its stderr goes to ``run_dir/stderr.txt``; returns the stats (with
    ``process_s``), or ``{"error": ...}`` on a timeout, a non-zero exit or no stats (a
    stats file left by an earlier run is removed first, so it is never taken for this
    one's)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    stats_path.unlink(missing_ok=True)
    log.debug("%s", " ".join(cmd))
    t0 = time.monotonic()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s"}
    (run_dir / "stderr.txt").write_text(done.stderr)
    if done.returncode != 0 or not stats_path.is_file():
        tail = done.stderr.strip().splitlines()[-1:] or [""]
        return {"error": f"exit {done.returncode}: {tail[0]}"}
    stats: dict[str, Any] = json.loads(stats_path.read_text())
    stats["process_s"] = time.monotonic() - t0
    return stats


def run_once(case: Case, run_dir: Path, timeout_s: float, extra: Sequence[str]) -> dict[str, Any]:
    """One ``slam run`` in a subprocess; its stats, or ``{"error": ...}``."""
    stats_path = run_dir / "stats.json"
    cmd = [
        sys.executable, "-m", "slam.cli.main", "-q", "run",
        "--source", case.source, "--sensor", case.sensor,
        "--out", str(run_dir / "trajectory.txt"), "--stats", str(stats_path),
        "--plot", str(run_dir / "trajectory.png"), "--no-progress", *extra,
    ]  # fmt: skip
    return run_for_stats(cmd, run_dir, stats_path, timeout_s)


def _median(runs: Sequence[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if isinstance(r.get(key), int | float)]
    return float(statistics.median(values)) if values else None


def aggregate(case: Case, runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One matrix row from the stats of the runs of ``case`` (failed runs count as failed)."""
    ok = [r for r in runs if "error" not in r]
    peaks = [r["peak_rss_mb"] for r in ok if isinstance(r.get("peak_rss_mb"), int | float)]
    published = PUBLISHED.get(case.name)
    return {
        "case": case.name,
        "source": case.source,
        "sensor": case.sensor,
        "runs": len(runs),
        "runs_ok": len(ok),
        "errors": sorted({r["error"] for r in runs if "error" in r}),
        "ate_alignment": "sim3" if case.sensor == "mono" else "se3",
        "ate_rmse_m": _median(ok, "ate_rmse_m"),
        "ate_rmse_m_runs": [r.get("ate_rmse_m") for r in ok],
        "tracked_ratio": _median(ok, "tracked_ratio"),
        "frames": _median(ok, "frames"),
        "fps": _median(ok, "fps"),
        "track_ms_median": _median(ok, "track_ms_median"),
        "track_ms_p95": _median(ok, "track_ms_p95"),
        "peak_rss_mb": max(peaks) if peaks else None,
        "keyframes": _median(ok, "keyframes"),
        "map_points": _median(ok, "map_points"),
        "published": asdict(published) if published else None,
    }


def _fmt(value: float | None, spec: str, scale: float = 1.0, unit: str = "") -> str:
    return "-" if value is None else f"{value * scale:{spec}}{unit}"


def markdown(rows: Sequence[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The matrix as a Markdown table, with the protocol and the published figures' sources."""
    lines = [
        "# Benchmark matrix",
        "",
        f"{meta['runs']} run(s) per configuration on {meta['machine']}, {meta['date']}. "
        "ATE RMSE: translation, after SE(3) alignment (stereo, RGB-D) or Sim(3) (mono), "
        "median over runs; tracked: share of frames with a pose; latency: per-frame "
        "tracking time, median and 95th percentile; memory: peak RSS of the process.",
        "",
        "| configuration | runs ok | ATE RMSE | tracked | fps | track ms (median / p95) "
        "| peak MB | published |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        pub = r["published"]["figure"] if r["published"] else "-"
        lines.append(
            f"| {r['case']} | {r['runs_ok']}/{r['runs']} "
            f"| {_fmt(r['ate_rmse_m'], '.2f', 100, ' cm')} "
            f"| {_fmt(r['tracked_ratio'], '.1f', 100, ' %')} | {_fmt(r['fps'], '.1f')} "
            f"| {_fmt(r['track_ms_median'], '.1f')} / {_fmt(r['track_ms_p95'], '.1f')} "
            f"| {_fmt(r['peak_rss_mb'], '.0f')} | {pub} |"
        )
    failed = [r for r in rows if r["errors"]]
    if failed:
        lines += ["", "Failures:", ""]
        lines += [f"- {r['case']}: {'; '.join(r['errors'])}" for r in failed]
    if meta.get("skipped"):
        lines += ["", "Not run here:", ""]
        lines += [f"- {name}: {why}" for name, why in meta["skipped"].items()]
    sources = sorted({p.source for p in PUBLISHED.values()})
    lines += ["", "Published figures: " + "; ".join(sources) + " (via shared/datasets/README.md)."]
    return "\n".join(lines) + "\n"


def machine() -> str:
    """A short description of this machine."""
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, " + (
        f"Python {platform.python_version()}"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run_matrix", description=__doc__)
    p.add_argument("--runs", type=int, default=3, help="runs per configuration")
    p.add_argument("--out", type=Path, default=Path("results"), help="output folder")
    p.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS, help="shared datasets")
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="TEXT",
        help="run only configurations whose name contains TEXT (repeatable)",
    )
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    p.add_argument("--max-frames", type=int, help="passed to slam run (quick smoke runs)")
    p.add_argument(
        "--no-warmup",
        action="store_true",
        help="skip the short untimed run per configuration that fills Numba's cache",
    )
    p.add_argument("-v", "--verbose", action="count", default=0)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the matrix; return 0 when every available configuration ran at least once."""
    from slam.cli.main import configure_logging

    args = parse_args(argv)
    configure_logging(args.verbose)
    if args.runs < 1:
        log.error("--runs must be at least 1")
        return 2
    extra = ["--max-frames", str(args.max_frames)] if args.max_frames else []
    cases = [resolve(c, args.datasets.resolve()) for c in default_cases()]
    cases = [c for c in cases if not args.only or any(t in c.name for t in args.only)]
    rows, skipped = [], {}
    for case in cases:
        why = unavailable(case, args.datasets)
        if why is not None:
            log.info("skip %s: %s", case.name, why)
            skipped[case.name] = why
            continue
        if not args.no_warmup:
            log.info("%s: warm-up (%d frames, not counted)", case.name, WARMUP_FRAMES)
            run_once(
                case,
                args.out / "runs" / case.name / "warmup",
                args.timeout,
                ["--max-frames", str(WARMUP_FRAMES)],
            )
        runs = []
        for i in range(args.runs):
            log.info("%s: run %d/%d", case.name, i + 1, args.runs)
            stats = run_once(case, args.out / "runs" / case.name / f"run{i}", args.timeout, extra)
            if "error" in stats:
                log.warning("%s run %d failed: %s", case.name, i + 1, stats["error"])
            else:
                log.info(
                    "%s run %d: ATE %s m, %.1f fps",
                    case.name,
                    i + 1,
                    stats.get("ate_rmse_m"),
                    stats.get("fps", float("nan")),
                )
            runs.append(stats)
        rows.append(aggregate(case, runs))
    meta = {
        "runs": args.runs,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "skipped": skipped,
        "max_frames": args.max_frames,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "matrix.json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    (args.out / "matrix.md").write_text(markdown(rows, meta))
    log.info("wrote %s and %s", args.out / "matrix.json", args.out / "matrix.md")
    return 0 if all(r["runs_ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

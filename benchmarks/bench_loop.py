"""Loop closing, relocalisation and map persistence, measured.

Usage: ``python -m benchmarks.bench_loop [--out results] [--datasets DIR] [--only NAME]``.

- ``loop``: the synthetic room twice round (600 frames), each sensor with loop
  closing on and off: ATE (SE(3); Sim(3) for monocular), loops closed and when the
  first one was found (the camera is back at its start at t = 10 s).
- ``kidnap``: freiburg1_rpy RGB-D with frames 400-574 left out, the first 10 of
  them black: frames from the camera's return to its relocalisation, and ATE.
- ``persist``: freiburg1_rpy RGB-D mapped and saved, the file loaded and replayed
  in localisation-only mode: ATE of both runs, frames tracked, file size, save and
  load times.

Results go to ``loop.json`` and ``loop.md`` in ``--out``.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.tables import save_tables
from slam.config import Sensor, load_config
from slam.eval.metrics import ate
from slam.io.sources import SkippedSpanSource, open_source
from slam.map.persistence import load_map
from slam.replay import RunResult, run_offline
from slam.synthetic.source import make_synthetic_source

log = logging.getLogger("benchmarks.bench_loop")
REPO = Path(__file__).resolve().parents[1]
RPY = "tum/rgbd_dataset_freiburg1_rpy"


def _ate(gt: Any, res: RunResult, sensor: str) -> float:
    return float(ate(gt, res.trajectory, "sim3" if sensor == "mono" else "se3").rmse_m)


# Our default odometry drifts only millimetres in two laps; ORB-SLAM-like odometry
# (whole-pixel keypoints, ORB-SLAM's keyframe rules alone) leaves centimetres to take out.
ODOMETRY: dict[str, dict[str, object]] = {
    "default": {},
    "whole-pixel": {"tracking.subpixel": "off", "tracking.keyframe_overlap_ratio": 0.0},
}


def bench_loop(_: Path) -> list[dict[str, Any]]:
    rows = []
    for odometry, overrides in ODOMETRY.items():
        for sensor in ("rgbd", "stereo", "mono"):
            rows.append(_loop_row(sensor, odometry, overrides))
    return rows


def _loop_row(sensor: str, odometry: str, overrides: dict[str, object]) -> dict[str, Any]:
    row: dict[str, Any] = {"sensor": sensor, "odometry": odometry}
    for on in (True, False):
        source = make_synthetic_source("loop", sensor, laps=2.0)
        cfg = load_config(overrides={"loop.enabled": on, **overrides})
        res = run_offline(source, sensor, source.calibration, cfg,  # type: ignore[arg-type]
                          progress=False)
        key = "on" if on else "off"
        row[f"ate_m_{key}"] = _ate(source.ground_truth(), res, sensor)
        row[f"fps_{key}"] = res.stats["fps"]
        if on:
            row["loops_closed"] = res.stats["loops_closed"]
            row["first_loop_s"] = res.loops[0].stamp if res.loops else None
    row["ratio"] = row["ate_m_off"] / row["ate_m_on"]
    log.info("loop %s: %s", sensor, row)
    return row


def bench_kidnap(datasets: Path) -> list[dict[str, Any]]:
    source = open_source(f"tum:{datasets / RPY}", "rgbd")
    start, stop, blank = 400, 575, 10
    seq = SkippedSpanSource(source, start, stop, blank)
    res = run_offline(seq, "rgbd", source.calibration, load_config(),  # type: ignore[arg-type]
                      progress=False)
    back = start + blank
    after = [f for f in res.relocalized_frames if f >= back]
    row = {
        "sensor": "rgbd", "skipped": f"{start}:{stop}", "black_frames": blank,
        "frames_to_relocalise": (after[0] - back) if after else None,
        "tracked_after": sum(s == "tracking" for s in res.states[back:]),
        "frames_after": len(res.states) - back,
        "maps": res.stats["maps"], "ate_m": _ate(source.ground_truth(), res, "rgbd"),
    }
    log.info("kidnap: %s", row)
    return [row]


def bench_persist(datasets: Path) -> list[dict[str, Any]]:
    uri = f"tum:{datasets / RPY}"
    source = open_source(uri, "rgbd")
    gt = source.ground_truth()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rpy.map"
        mapping = run_offline(source, "rgbd", source.calibration,  # type: ignore[arg-type]
                              load_config(), progress=False, save_map=path)
        t_load = time.perf_counter()
        loaded = load_map(path, calibration=source.calibration, sensor="rgbd")
        load_ms = (time.perf_counter() - t_load) * 1e3
        size_mb = path.stat().st_size / 1e6
        loc = run_offline(open_source(uri, "rgbd"), Sensor.RGBD, loaded.calibration, load_config(),
                          progress=False, initial_map=loaded.map, localization_only=True)
    row = {
        "sensor": "rgbd", "keyframes": mapping.stats["keyframes"],
        "map_points": mapping.stats["map_points"], "file_mb": size_mb, "load_ms": load_ms,
        "ate_m_mapping": _ate(gt, mapping, "rgbd"), "ate_m_localisation": _ate(gt, loc, "rgbd"),
        "tracked_localisation": loc.stats["tracked_frames"], "frames": loc.stats["frames"],
        "fps_mapping": mapping.stats["fps"], "fps_localisation": loc.stats["fps"],
    }
    log.info("persist: %s", row)
    return [row]


BENCHES: dict[str, Callable[[Path], list[dict[str, Any]]]] = {
    "loop": bench_loop, "kidnap": bench_kidnap, "persist": bench_persist,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "results")
    p.add_argument("--datasets", type=Path, default=REPO.parent / "shared" / "datasets")
    p.add_argument("--only", choices=sorted(BENCHES), action="append")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("slam").setLevel(logging.WARNING)
    results = {name: BENCHES[name](args.datasets) for name in (args.only or list(BENCHES))}
    print(save_tables(results, args.out, "loop"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Dense reconstruction, measured (needs the ``dense`` extra, Open3D).

Usage: ``python -m benchmarks.bench_dense [--out results] [--datasets DIR] [--runs N]
[--only NAME]``.

- ``speed``: freiburg1_rpy RGB-D as fast as it goes, ``--runs`` times without and with
  ``--dense``, alternating: fps, tracking latency, and what the dense process did.
- ``realtime``: the same replayed at the camera's 30 Hz (frames are released at their
  timestamps and wait in a bounded queue when SLAM is late): wall time against the
  sequence's duration without and with ``--dense``; equal means it stays real time.
- ``export``: the map of a freiburg1_rpy run saved (format 2: JPEG colour, 16-bit PNG
  depth) and exported: file sizes against the raw image bytes, mesh size and times.
- ``synthetic``: mesh accuracy on the synthetic room (forward, RGB-D) with the true
  poses and with a SLAM run's: median and 95th percentile distance to the true quads.

Results go to ``dense.json`` and ``dense.md`` in ``--out``.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.tables import save_tables
from slam.config import Sensor, load_config
from slam.dense.export import export_mesh, export_points, fuse_map
from slam.dense.tsdf import TsdfParams
from slam.dense.worker import DenseOptions
from slam.eval.metrics import ate
from slam.geometry.alignment import umeyama
from slam.geometry.lie import se3_inv
from slam.io.sources import open_source
from slam.map.persistence import load_map, save_map
from slam.replay import RunResult, run_offline
from slam.synthetic.accuracy import surface_error
from slam.synthetic.source import make_synthetic_source

log = logging.getLogger("benchmarks.bench_dense")
REPO = Path(__file__).resolve().parents[1]
RPY = "tum/rgbd_dataset_freiburg1_rpy"


def _rpy(datasets: Path, dense: Path | None, realtime: bool = False,
         save: Path | None = None) -> tuple[RunResult, Any]:
    source = open_source(f"tum:{datasets / RPY}", "rgbd")
    options = None if dense is None else DenseOptions(dense)
    res = run_offline(source, "rgbd", source.calibration, load_config(),  # type: ignore[arg-type]
                      progress=False, realtime=realtime, dense=options, save_map=save)
    return res, source.ground_truth()


def _row(mode: str, res: RunResult, gt: Any) -> dict[str, Any]:
    s = res.stats
    stamps = res.trajectory.stamps
    row = {"mode": mode, "frames": s["frames"], "fps": s["fps"], "wall_s": s["wall_s"],
           "sequence_s": float(stamps[-1] - stamps[0]) if len(stamps) else 0.0,
           "track_ms_median": s["track_ms_median"], "track_ms_p95": s["track_ms_p95"],
           "keyframes": s["keyframes"],
           "ate_m": float(ate(gt, res.trajectory, "se3").rmse_m)}
    if res.dense is not None:
        row |= {"dense_vertices": res.dense.n_vertices, "dense_rebuilds": res.dense.rebuilds,
                "integrate_ms": res.dense.integrate_ms_median,
                "finish_s": res.dense.finish_s}
    return row


def bench_speed(datasets: Path, runs: int) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs):
            for on in (False, True):
                res, gt = _rpy(datasets, Path(tmp) / f"m{i}.ply" if on else None)
                rows.append(_row("dense" if on else "plain", res, gt))
                log.info("speed: %s", rows[-1])
    for mode in ("plain", "dense"):
        mine = [r for r in rows if r["mode"] == mode]
        rows.append({"mode": f"{mode} (median)", **{k: float(np.median([r[k] for r in mine]))
                                                      for k in ("fps", "track_ms_median",
                                                                "track_ms_p95")}})
    return rows


def bench_realtime(datasets: Path, runs: int) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(runs):
            for on in (False, True):
                res, gt = _rpy(datasets, Path(tmp) / "m.ply" if on else None, realtime=True)
                rows.append(_row("dense" if on else "plain", res, gt))
                log.info("realtime: %s", rows[-1])
    return rows


def bench_export(datasets: Path, runs: int) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rpy.map"
        _rpy(datasets, None, save=path)
        loaded = load_map(path)
        m = loaded.map
        frames = [kf.frame for kf in m.keyframes.values()]
        raw_colour = sum(f.color.nbytes for f in frames if f.color is not None)
        raw_depth = sum(f.depth_image.nbytes for f in frames if f.depth_image is not None)
        save_map(Path(tmp) / "png.map", m, loaded.calibration, "rgbd", color_quality=None)
        t0 = time.perf_counter()
        n_points = export_points(m, loaded.calibration.camera, Path(tmp) / "p.ply")
        t1 = time.perf_counter()
        report = export_mesh(m, loaded.calibration, Path(tmp) / "mesh.ply")
        t2 = time.perf_counter()
        row = {"keyframes": len(frames), "file_mb": path.stat().st_size / 1e6,
               "file_png_colour_mb": (Path(tmp) / "png.map").stat().st_size / 1e6,
               "raw_colour_mb": raw_colour / 1e6, "raw_depth_mb": raw_depth / 1e6,
               "points": n_points, "points_s": t1 - t0, "mesh_vertices": report.n_vertices,
               "mesh_mb": report.path.stat().st_size / 1e6, "mesh_s": t2 - t1,
               "renderer": report.renderer}
    log.info("export: %s", row)
    return [row]


def bench_synthetic(datasets: Path, runs: int) -> list[dict[str, Any]]:
    src = make_synthetic_source("forward", "rgbd")
    assert src.calibration is not None
    gt = src.ground_truth()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        res = run_offline(src, Sensor.RGBD, src.calibration, load_config(), progress=False,
                          dense=DenseOptions(Path(tmp) / "m.ply", picture=False),
                          save_map=Path(tmp) / "m.map")
        m = load_map(Path(tmp) / "m.map").map
        idx = np.searchsorted(gt.stamps, res.trajectory.stamps)
        R, t, _ = umeyama(res.trajectory.positions, gt.positions[idx], with_scale=False)
        for kf in m.keyframes.values():  # the same keyframes at their true poses
            i = int(np.argmin(np.abs(gt.stamps - kf.timestamp)))
            kf.T_cam_world, kf.bad = np.asarray(se3_inv(gt.T_world_cam[i])), False
        true_mesh = fuse_map(m, src.calibration, TsdfParams()).mesh()
        import open3d as o3d

        slam_v = np.asarray(o3d.io.read_triangle_mesh(Path(tmp) / "m.ply").vertices)
        for poses, v in (("true", true_mesh.vertices), ("slam", slam_v @ R.T + t)):
            err = surface_error(v, src.scene.quads)
            rows.append({"poses": poses, "keyframes": len(m.keyframes), "vertices": err.n,
                         "median_cm": 100 * err.median_m, "p95_cm": 100 * err.p95_m,
                         "max_cm": 100 * err.max_m})
    log.info("synthetic: %s", rows)
    return rows


BENCHES: dict[str, Callable[[Path, int], list[dict[str, Any]]]] = {
    "speed": bench_speed, "realtime": bench_realtime, "export": bench_export,
    "synthetic": bench_synthetic,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "results")
    p.add_argument("--datasets", type=Path, default=REPO.parent / "shared" / "datasets")
    p.add_argument("--runs", type=int, default=2, help="runs of each mode (speed)")
    p.add_argument("--only", choices=sorted(BENCHES), action="append")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("slam").setLevel(logging.WARNING)
    results = {name: BENCHES[name](args.datasets, args.runs)
               for name in (args.only or list(BENCHES))}
    print(save_tables(results, args.out, "dense"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Acceptance on the shared real sequences (slow; they run in CI, where missing data fails)."""

from __future__ import annotations

from pathlib import Path

import pytest

from slam.config import load_config
from slam.eval.metrics import ate
from slam.io.sources import open_source
from slam.replay import RunResult, run_offline

pytestmark = pytest.mark.slow


def _run(uri: str, sensor: str, **overrides: object) -> tuple[RunResult, float, int]:
    source = open_source(uri, sensor)
    assert source.calibration is not None
    res = run_offline(source, sensor, source.calibration, load_config(overrides=overrides),
                      progress=False)
    gt = source.ground_truth()
    assert gt is not None
    err = ate(gt, res.trajectory, "sim3" if sensor == "mono" else "se3")
    return res, err.rmse_m, len(source)


def test_tum_fr1_rpy_rgbd(shared_datasets: Path) -> None:
    # With the mapping thread, thread timing moves the result by a few millimetres (2.1-2.5
    # cm quiet, 2.7 cm once under CI's parallel load; the benchmark reports the median of
    # 3 threaded runs, 2.27 cm). Mapping inline runs the same algorithm and repeats: 2.26 cm.
    res, rmse, n = _run(f"tum:{shared_datasets / 'tum' / 'rgbd_dataset_freiburg1_rpy'}", "rgbd",
                        **{"system.threads": False})
    assert res.stats["tracked_frames"] >= 0.98 * n
    assert rmse <= 0.025


def test_tum_fr1_rpy_monocular(shared_datasets: Path) -> None:
    res, rmse, n = _run(f"tum:{shared_datasets / 'tum' / 'rgbd_dataset_freiburg1_rpy'}", "mono")
    # Monocular replays map inline, so the result repeats: 702/723 tracked, 2.8 cm.
    assert res.stats["tracked_frames"] >= 0.90 * n
    assert rmse <= 0.04


def test_kitti_06_stereo(shared_datasets: Path) -> None:
    res, rmse, n = _run(f"kitti:{shared_datasets / 'kitti' / 'sequences' / '06'}", "stereo")
    assert res.stats["tracked_frames"] == n
    assert rmse <= 0.4


def test_kitti_06_monocular(shared_datasets: Path) -> None:
    res, _, n = _run(f"kitti:{shared_datasets / 'kitti' / 'sequences' / '06'}", "mono")
    assert res.stats["tracked_frames"] >= 0.8 * n

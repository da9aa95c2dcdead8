"""``slam run`` with a fake system: outputs, evaluation, options."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from slam.cli import run
from slam.errors import ConfigError
from slam.geometry.lie import se3_inv
from slam.io.sources import LimitedSource
from slam.io.trajectory_io import read_kitti_poses, read_tum_trajectory
from tests.cli.run_fakes import (
    FakeSource,
    FakeSystem,
    G,
    ground_truth,
    run_fake,
    use_source,
)


def test_rgbd_run_writes_trajectory_stats_plot_and_summary(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_system: FakeSystem,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = FakeSource(ground_truth())
    use_source(monkeypatch, source)
    argv = ["--plot", str(tmp_path / "p.png"), "--set", "features.n_features=1500", "--realtime"]
    assert run_fake(tmp_path, "rgbd", *argv) == 0

    call = fake_system.calls[0]
    assert call["config"].features.n_features == 1500
    assert (call["realtime"], call["progress"], call["calibration"]) == (True, False, "calibration")
    assert source.closed
    written = read_tum_trajectory(tmp_path / "traj.txt")
    np.testing.assert_allclose(
        written.T_world_cam, se3_inv(G)[None] @ ground_truth().T_world_cam, atol=1e-6
    )
    stats = json.loads((tmp_path / "stats.json").read_text())
    for key in (
        "frames",
        "tracked_frames",
        "keyframes",
        "map_points",
        "wall_s",
        "fps",
        "track_ms_median",
        "track_ms_p95",
        "peak_rss_mb",
        "ate_rmse_m",
    ):
        assert stats[key] is not None, key
    assert stats["ate_alignment"] == "se3"
    assert stats["ate_rmse_m"] < 1e-6
    assert stats["ate_n_matched"] == 40
    assert stats["track_ms_median"] == pytest.approx(30.0)
    assert stats["track_ms_p95"] == pytest.approx(np.percentile(fake_system.track_ms, 95))
    assert stats["tracked_ratio"] == 1.0
    assert cv2.imread(str(tmp_path / "p.png")) is not None
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1
    assert "ATE 0.0000 m (se3, 40 poses)" in out[0] and "20.0 fps" in out[0]
    assert "tracked 100.0 % (40/40)" in out[0]


def test_mono_run_is_evaluated_with_sim3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_system: FakeSystem
) -> None:
    use_source(monkeypatch, FakeSource(ground_truth()))
    assert run_fake(tmp_path, "mono") == 0
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["ate_alignment"] == "sim3"
    assert stats["ate_scale"] == pytest.approx(2.0)
    assert stats["ate_rmse_m"] < 1e-6


def test_kitti_format_and_max_frames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_system: FakeSystem
) -> None:
    use_source(monkeypatch, FakeSource(ground_truth()))
    assert run_fake(tmp_path, "rgbd", "--format", "kitti", "--max-frames", "12") == 0
    assert fake_system.calls[0]["frames"] == 12
    rows = (tmp_path / "traj.txt").read_text().splitlines()
    assert len(rows) == 12 and all(len(r.split()) == 12 for r in rows)
    expected = se3_inv(G)[None] @ ground_truth().T_world_cam[:12]
    np.testing.assert_allclose(
        read_kitti_poses(tmp_path / "traj.txt").T_world_cam, expected, atol=1e-6
    )


def test_without_ground_truth_there_is_no_ate(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_system: FakeSystem,
    capsys: pytest.CaptureFixture[str],
) -> None:
    use_source(monkeypatch, FakeSource(None))
    assert run_fake(tmp_path, "rgbd", "--plot", str(tmp_path / "p.png")) == 0
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert "ate_rmse_m" not in stats
    assert "ATE n/a" in capsys.readouterr().out
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_parse_overrides() -> None:
    assert run.parse_overrides(["a.b=3", "c.d=0.5", "e.f=true", "g.h=abc"]) == {
        "a.b": 3,
        "c.d": 0.5,
        "e.f": True,
        "g.h": "abc",
    }
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        run.parse_overrides(["features.n_features"])


def test_limited_source_passes_the_rest_through() -> None:
    limited = LimitedSource(FakeSource(ground_truth()), 5)
    assert (len(limited), limited.length, list(limited)) == (5, 5, [0, 1, 2, 3, 4])
    assert limited.name == "fake:seq"
    assert limited.ground_truth() is not None

"""Relocalisation by place recognition on the synthetic room (exact ground truth)."""

from __future__ import annotations

import numpy as np
import pytest

from slam.config import load_config
from slam.eval.metrics import ate
from slam.io.sources import SkippedSpanSource
from slam.replay import run_offline
from slam.synthetic.source import make_synthetic_source


@pytest.mark.slow
def test_a_kidnapped_camera_relocalises_in_the_map_without_loop_closing() -> None:
    # Frames 0-179 map most of the room; 10 black frames; then the camera reappears
    # at frame 330 (lap 2, 30 frames past the start: a mapped place, 150 frames away).
    source = make_synthetic_source("loop", "rgbd", laps=1.4)
    assert source.calibration is not None
    kidnapped = SkippedSpanSource(source, 180, 330, blank=10)
    cfg = load_config(overrides={"loop.enabled": False})
    res = run_offline(kidnapped, "rgbd", source.calibration, cfg, progress=False)
    back = 190
    assert res.states[180:back] == ["lost"] * 10
    assert next(f for f in res.relocalized_frames if f >= back) < back + 3
    assert res.states[-1] == "tracking" and res.stats["maps"] == 1
    gt = source.ground_truth()
    assert gt is not None
    err = ate(gt, res.trajectory, "se3")
    assert err.n_matched == res.stats["tracked_frames"]
    assert err.rmse_m < 0.05
    # The frames after the kidnap are posed where they really are.
    after = res.trajectory.stamps > 330 / 30.0 - 1e-6
    assert np.count_nonzero(after) >= 80

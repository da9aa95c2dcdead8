"""Loop closing end to end on the synthetic room, with exact ground truth.

The camera goes twice round the room (300 frames a lap at 30 Hz): from frame 300
(t = 10 s) on it is back where it started. Odometry has drifted by then and goes on
drifting in the second lap; closing the loop must take most of that drift out and
happen soon after the revisit.
"""

from __future__ import annotations

import pytest

from slam.config import load_config
from slam.eval.metrics import ate
from slam.synthetic.source import make_synthetic_source
from slam.system import RunResult, run_offline

LAPS = 2.0
REVISIT_S = 10.0  # the first frame of the second lap repeats the pose of frame 0


def _run(sensor: str, loop: bool) -> tuple[RunResult, float]:
    source = make_synthetic_source("loop", sensor, laps=LAPS)
    assert source.calibration is not None
    cfg = load_config(overrides={"loop.enabled": loop})
    res = run_offline(source, sensor, source.calibration, cfg, progress=False)
    gt = source.ground_truth()
    assert gt is not None
    return res, ate(gt, res.trajectory, "sim3" if sensor == "mono" else "se3").rmse_m


@pytest.mark.slow
@pytest.mark.parametrize("sensor", ["rgbd", "stereo", "mono"])
def test_closing_the_loop_cuts_the_drift_threefold(sensor: str) -> None:
    closed, ate_closed = _run(sensor, loop=True)
    open_, ate_open = _run(sensor, loop=False)
    # Measured: RGB-D 6.9 vs 71.3 mm, stereo 9.7 vs 46.9 mm, mono (Sim(3)) 7.4 vs
    # 25.8 mm; loops found at 9.9-10.6 s.
    assert open_.stats["loops_closed"] == 0
    assert closed.stats["loops_closed"] >= 1
    assert ate_closed * 3 <= ate_open
    first = closed.loops[0]
    assert first.loop_stamp < 2.0  # joined to the start of the first lap
    assert REVISIT_S - 0.5 <= first.stamp <= REVISIT_S + 1.0  # within a second of it
    assert closed.stats["tracked_frames"] >= 0.97 * closed.stats["frames"]  # mono initialises

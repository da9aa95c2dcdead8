"""Loop closing end to end on the synthetic room, with exact ground truth.

The camera goes twice round the room (300 frames a lap at 30 Hz): from frame 300
(t = 10 s) on it is back where it started. Odometry has drifted by then and goes on
drifting in the second lap; closing the loop must take most of that drift out and
happen soon after the revisit.

Our default odometry (sub-pixel refinement, denser keyframes) drifts only 5-11 mm
in the two laps, too little to measure a threefold cut, so the drift test runs on
ORB-SLAM-like odometry (:data:`WHOLE_PIXEL`: whole-pixel keypoints, ORB-SLAM's
keyframe rules alone), which drifts 2-3 cm; the default configuration must still
close the loop and stay within the accuracy the SLAM core promises.
"""

from __future__ import annotations

import pytest

from slam.config import load_config
from slam.eval.metrics import ate
from slam.replay import RunResult, run_offline
from slam.synthetic.source import make_synthetic_source

LAPS = 2.0
REVISIT_S = 10.0  # the first frame of the second lap repeats the pose of frame 0
WHOLE_PIXEL = {"tracking.subpixel": "off", "tracking.keyframe_overlap_ratio": 0.0}


def _run(sensor: str, loop: bool, **overrides: object) -> tuple[RunResult, float]:
    source = make_synthetic_source("loop", sensor, laps=LAPS)
    assert source.calibration is not None
    cfg = load_config(overrides={"loop.enabled": loop, **overrides})
    res = run_offline(source, sensor, source.calibration, cfg, progress=False)
    gt = source.ground_truth()
    assert gt is not None
    return res, ate(gt, res.trajectory, "sim3" if sensor == "mono" else "se3").rmse_m


@pytest.mark.slow
@pytest.mark.parametrize("sensor", ["rgbd", "stereo", "mono"])
def test_closing_the_loop_cuts_the_drift_threefold(sensor: str) -> None:
    closed, ate_closed = _run(sensor, loop=True, **WHOLE_PIXEL)
    open_, ate_open = _run(sensor, loop=False, **WHOLE_PIXEL)
    # Measured: RGB-D 6.9 vs 71.3 mm, stereo 9.7 vs 46.9 mm, mono (Sim(3)) 7.4 vs
    # 25.8 mm; loops found at 9.9-10.6 s.
    assert open_.stats["loops_closed"] == 0
    assert closed.stats["loops_closed"] >= 1
    assert ate_closed * 3 <= ate_open
    first = closed.loops[0]
    assert first.loop_stamp < 2.0  # joined to the start of the first lap
    assert REVISIT_S - 0.5 <= first.stamp <= REVISIT_S + 1.0  # within a second of it
    assert closed.stats["tracked_frames"] >= 0.97 * closed.stats["frames"]  # mono initialises


@pytest.mark.slow
@pytest.mark.parametrize("sensor", ["rgbd", "stereo", "mono"])
def test_default_odometry_closes_the_loop_within_the_core_accuracy(sensor: str) -> None:
    closed, ate_closed = _run(sensor, loop=True)
    # Measured: RGB-D 1.8 mm, stereo 3.4 mm, mono 2.3 mm (loop closing off: 4.9 / 9.0
    # / 10.9 mm).
    assert closed.stats["loops_closed"] >= 1
    assert ate_closed <= (0.01 if sensor == "mono" else 0.005)
    assert REVISIT_S - 0.5 <= closed.loops[0].stamp <= REVISIT_S + 1.0

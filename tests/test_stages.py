"""StageClock: per-stage timings of a thread, bounded, readable from another thread."""

from __future__ import annotations

import threading

import pytest

from slam import stages
from slam.stages import StageClock, format_stages


def test_stages_count_every_run_and_time_the_block() -> None:
    clock = StageClock("tracking")
    for ms in (1.0, 2.0, 3.0):
        clock.add("orb", ms)
    with clock.stage("pose"):
        threading.Event().wait(0.02)
    with pytest.raises(ValueError), clock.stage("pose"):
        raise ValueError("a stage that fails is still timed")
    s = clock.summary()
    assert s["orb"]["n"] == 3 and s["orb"]["median_ms"] == 2.0
    assert s["orb"]["total_s"] == pytest.approx(0.006)
    assert s["pose"]["n"] == 2 and s["pose"]["total_s"] >= 0.02
    assert clock.median("orb") == 2.0 and clock.median("never") == 0.0


def test_memory_is_bounded_but_totals_count_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stages, "TIMINGS_KEPT", 5)
    clock = StageClock("mapping")
    for i in range(100):
        clock.add("fuse", float(i))
    s = clock.summary()["fuse"]
    assert s["n"] == 100 and s["total_s"] == pytest.approx(sum(range(100)) / 1e3)
    assert s["median_ms"] == 97.0  # of the newest five: 95..99


def test_format_stages_shows_shares_of_the_wall_time() -> None:
    clock = StageClock("tracking")
    clock.add("orb", 500.0)
    table = format_stages({"tracking": clock.summary()}, wall_s=2.0)
    assert "tracking" in table and "orb" in table and "25.0%" in table

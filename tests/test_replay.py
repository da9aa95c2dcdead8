"""The offline replay: early stops keep what was computed; timestamps that do not increase
are skipped or refused; signals become stop requests (issue 12, finding 7)."""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from slam.config import load_config
from slam.errors import DataSourceError, ImageError
from slam.io.types import SensorFrame
from slam.replay import COMPLETED, DATA_ERROR, SIGTERM, ReplayStop, run_offline, stop_on_signals
from slam.synthetic.source import make_synthetic_source

N = 30


class ScriptedSource:
    """The first ``N`` frames of the synthetic rgbd loop, with a hook after each frame read
    (on the reader thread) and optional stamps to replace the real ones."""

    def __init__(self, after: Any = None, stamps: list[float] | None = None) -> None:
        self._inner = make_synthetic_source("sideways", "rgbd", n_frames=N)
        self.name = "scripted"
        self.sensors = self._inner.sensors
        self.calibration = self._inner.calibration
        self.length = len(stamps) if stamps is not None else N
        self._after = after
        self._stamps = stamps

    def __iter__(self) -> Iterator[SensorFrame]:
        frames = iter(self._inner)
        for i in range(self.length):
            sf = next(frames)
            if self._stamps is not None:
                sf = dataclasses.replace(sf, timestamp=self._stamps[i])
            yield sf
            if self._after is not None:
                self._after(i)


def replay(source: ScriptedSource, **kwargs: Any) -> Any:
    assert source.calibration is not None
    return run_offline(source, "rgbd", source.calibration, load_config(),  # type: ignore[arg-type]
                       progress=False, **kwargs)


def test_a_complete_replay_says_so() -> None:
    res = replay(ScriptedSource())
    assert res.completed and res.stopped == COMPLETED and res.error is None
    assert res.stats["completed"] is True and res.stats["stopped"] == "completed"
    assert len(res.trajectory) == res.stats["frames"] == res.frames_read == N


def test_the_stats_say_where_the_time_went() -> None:
    """fps counts the feeding loop; start-up and finish are beside it; every frame after
    the first was prefetched; each thread reports its stages."""
    s = replay(ScriptedSource()).stats
    assert s["startup_s"] + s["feed_s"] + s["finish_s"] == pytest.approx(s["wall_s"])
    assert s["fps"] == pytest.approx(N / s["feed_s"])
    assert s["fps_overall"] == pytest.approx(N / s["wall_s"]) and s["peak_rss_mb"] > 0
    stages = s["stages"]
    assert stages["features"]["wait_prefetch"]["n"] == N - 1
    assert stages["features"]["orb"]["n"] == N
    assert {"features", "pose", "local_map"} <= set(stages["tracking"])
    assert stages["mapping"]["keyframe"]["n"] == s["keyframes_inserted"]
    assert {"triangulate", "fuse", "local_ba", "cull_keyframes"} <= set(stages["mapping"])
    assert stages["loop closing"]["index"]["n"] == s["keyframes_inserted"]


def test_a_stop_request_ends_the_replay_between_frames_with_the_poses_so_far() -> None:
    stop = ReplayStop()

    def after(i: int) -> None:
        if i == 9:
            stop.request(SIGTERM)

    res = replay(ScriptedSource(after), stop=stop)
    assert res.stopped == SIGTERM and not res.completed
    assert res.stats["stopped"] == "sigterm" and res.stats["completed"] is False
    assert 1 <= res.stats["frames"] <= 10  # no frame read after the request is processed
    assert len(res.trajectory) == res.stats["tracked_frames"] == res.stats["frames"]
    assert np.all(np.diff(res.trajectory.stamps) > 0)


def failing_after(k: int) -> Any:
    def after(i: int) -> None:
        if i == k - 1:
            raise ImageError(f"cannot decode image frame{k}.png (corrupt or not an image)")
    return after


def test_a_data_error_keeps_the_frames_before_it_when_asked() -> None:
    res = replay(ScriptedSource(failing_after(12)), partial_on_error=True)
    assert res.stopped == DATA_ERROR and isinstance(res.error, ImageError)
    assert res.stats["stopped"] == "data_error"
    assert len(res.trajectory) == res.stats["frames"] == 12


def test_a_data_error_is_raised_by_default() -> None:
    with pytest.raises(ImageError, match=r"frame12\.png"):
        replay(ScriptedSource(failing_after(12)))


STAMPS = [0.1 * i for i in range(20)]
BAD_STAMPS = [*STAMPS[:5], STAMPS[4], *STAMPS[5:12], 0.3, STAMPS[11], *STAMPS[12:]]


def test_duplicate_and_out_of_order_stamps_are_skipped_and_counted() -> None:
    res = replay(ScriptedSource(stamps=BAD_STAMPS))
    assert res.completed
    assert res.stats["frames_duplicate_stamp"] == 2
    assert res.stats["frames_out_of_order"] == 1
    assert res.stats["frames"] == len(STAMPS) and res.frames_read == len(BAD_STAMPS)
    np.testing.assert_allclose(res.trajectory.stamps, STAMPS)


def test_strict_stamps_refuse_the_first_duplicate() -> None:
    with pytest.raises(DataSourceError, match="frame 5 repeats the timestamp"):
        replay(ScriptedSource(stamps=BAD_STAMPS), strict_stamps=True)
    res = replay(ScriptedSource(stamps=BAD_STAMPS), strict_stamps=True, partial_on_error=True)
    assert res.stopped == DATA_ERROR and len(res.trajectory) == 5


def test_signals_become_a_stop_request_and_handlers_come_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    stop = ReplayStop()
    with stop_on_signals(stop):
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.event.wait(10.0)  # the handler runs in this (main) thread
    assert stop.reason == SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before

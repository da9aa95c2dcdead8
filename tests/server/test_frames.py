"""The frame queue (back-pressure or drop-oldest) and the source feeder."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from server.frames import FrameQueue, Job, SourceFeeder, resilient_frames
from slam.io.types import SensorFrame


def _job(i: int) -> Job:
    return Job(SensorFrame(i, i / 30.0, np.zeros((2, 2), np.uint8)), 0.0, client_seq=i)


def test_drop_oldest_queue_keeps_the_newest_and_counts_drops() -> None:
    q = FrameQueue(2, drop_oldest=True)
    assert q.put(_job(0)) is None and q.put(_job(1)) is None
    dropped = [q.put(_job(i)) for i in (2, 3)]
    assert [d.client_seq for d in dropped if d is not None] == [0, 1]
    assert q.drops == 2 and len(q) == 2
    assert [q.get(0.0).client_seq for _ in range(2)] == [2, 3]  # type: ignore[union-attr]
    assert q.get(0.01) is None and not q.finished
    q.close()
    assert q.finished


def test_blocking_queue_waits_for_room_and_gives_up_on_stop() -> None:
    q = FrameQueue(1, drop_oldest=False)
    q.put(_job(0))
    t0 = time.monotonic()
    threading.Timer(0.2, lambda: q.get(0.0)).start()
    assert q.put(_job(1)) is None and time.monotonic() - t0 >= 0.15
    stop = threading.Event()
    threading.Timer(0.1, stop.set).start()
    refused = q.put(_job(2), stop)
    assert refused is not None and refused.client_seq == 2 and q.drops == 0
    with pytest.raises(ValueError):
        FrameQueue(0, drop_oldest=True)


class _Frames:
    """A source: random access when ``indexed``, else a generator; frame 2 is corrupt."""

    def __init__(self, n: int, indexed: bool) -> None:
        self.length = n
        if indexed:
            self.frame = self._frame

    def _frame(self, i: int) -> SensorFrame:
        if i == 2:
            raise OSError("truncated file")
        return SensorFrame(i, i / 30.0, np.zeros((2, 2), np.uint8))

    def __iter__(self) -> Iterator[SensorFrame]:
        return (self._frame(i) for i in range(self.length))


def test_resilient_frames_skip_exactly_the_bad_frame_when_they_can() -> None:
    errors: list[int] = []
    got = [f.index for f in resilient_frames(_Frames(5, True), lambda i, e: errors.append(i))]
    assert got == [0, 1, 3, 4] and errors == [2]
    errors.clear()
    got = [f.index for f in resilient_frames(_Frames(5, False), lambda i, e: errors.append(i))]
    assert got == [0, 1] and errors == [2]  # a generator cannot go on after raising


def _drain(q: FrameQueue) -> list[int]:
    """The frame indices taken from ``q`` until it is closed and empty."""
    got = []
    while not q.finished:
        job = q.get(0.5)
        if job is not None:
            got.append(job.frame.index)
    return got


def test_feeder_paces_a_realtime_replay_and_closes_the_queue() -> None:
    q = FrameQueue(8, drop_oldest=False)
    feeder = SourceFeeder(_Frames(4, True), q, realtime=True, on_error=lambda i, e: None)
    t0 = time.monotonic()
    feeder.start()
    got = _drain(q)
    assert got == [0, 1, 3] and time.monotonic() - t0 >= 0.09  # frame 3 at 0.1 s
    feeder.stop()


class _Counted(_Frames):
    """A source that counts the frames read from it."""

    def __init__(self, n: int) -> None:
        super().__init__(n, True)
        self.reads = 0
        self.frame = self._counted

    def _counted(self, i: int) -> SensorFrame:
        self.reads += 1
        return SensorFrame(i, i / 30.0, np.zeros((2, 2), np.uint8))


def test_a_paused_realtime_replay_reads_nothing_and_loses_no_frame() -> None:
    """``slam serve --paused`` with a replay at its own rate: the source waits for
    'resume' (before, the frames of the pause went to the drop-oldest queue and were
    lost), and pacing starts from the first frame after the pause."""
    q = FrameQueue(2, drop_oldest=True)
    running = threading.Event()
    source = _Counted(6)
    feeder = SourceFeeder(source, q, realtime=True, on_error=lambda i, e: None,
                          running=running)
    feeder.start()
    try:
        assert not q.finished and q.get(0.3) is None
        assert source.reads == 0 and q.drops == 0
        t_resume = time.monotonic()
        running.set()
        got = _drain(q)
        assert got == list(range(6)) and q.drops == 0
        # Paced from the resume: frame 5 at 5/30 s after it, not at once.
        assert time.monotonic() - t_resume >= 0.15
    finally:
        feeder.stop()

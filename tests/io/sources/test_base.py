"""Image helpers and the bounded reader thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from slam.errors import ImageError
from slam.io.sources.base import BoundedReader, FrameSource, read_color, read_depth, read_grey
from slam.io.types import SensorFrame


def _frame(i: int, stamp: float | None = None) -> SensorFrame:
    return SensorFrame(i, float(i) if stamp is None else stamp, np.full((2, 2), i, np.uint8))


def test_read_grey_and_color_match_opencv(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    path = tmp_path / "c.png"
    cv2.imwrite(str(path), bgr)
    grey, color = read_color(path, (30, 20))
    np.testing.assert_array_equal(color, bgr)
    np.testing.assert_array_equal(grey, cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    np.testing.assert_array_equal(read_grey(path), cv2.imread(str(path), cv2.IMREAD_GRAYSCALE))
    assert grey.dtype == np.uint8 and grey.shape == (20, 30)


def test_read_depth_scales_to_metres(tmp_path: Path) -> None:
    raw = np.array([[0, 5000, 10000], [1, 65535, 2500]], dtype=np.uint16)
    path = tmp_path / "d.png"
    cv2.imwrite(str(path), raw)
    depth = read_depth(path, 5000.0, (3, 2))
    assert depth.dtype == np.float32
    np.testing.assert_array_equal(depth, raw.astype(np.float32) / np.float32(5000.0))
    assert depth[0, 0] == 0.0 and depth[0, 1] == 1.0 and depth[0, 2] == 2.0


def test_depth_must_be_16_bit(tmp_path: Path) -> None:
    path = tmp_path / "d8.png"
    cv2.imwrite(str(path), np.zeros((4, 4), np.uint8))
    with pytest.raises(ImageError, match=r"d8.png.*16-bit"):
        read_depth(path, 5000.0)


def test_garbage_wrong_size_and_missing_images(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\x00\x01garbage" * 50)
    with pytest.raises(ImageError, match=r"bad.jpg"):
        read_grey(bad)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty.png"):
        read_color(empty)
    ok = tmp_path / "ok.png"
    cv2.imwrite(str(ok), np.zeros((10, 12), np.uint8))
    with pytest.raises(ImageError, match=r"ok.png is 12x10, expected 640x480"):
        read_grey(ok, (640, 480))
    with pytest.raises(ImageError, match=r"missing.png"):
        read_grey(tmp_path / "missing.png")


class _Live(FrameSource):
    name = "live"
    sensors = frozenset({"mono"})
    calibration = None

    def __iter__(self) -> Iterator[SensorFrame]:
        yield _frame(0)


def test_unknown_length_raises_type_error() -> None:
    source = _Live()
    assert source.length is None
    with pytest.raises(TypeError, match="no known length"):
        len(source)


def test_reader_yields_all_frames_in_order() -> None:
    with BoundedReader((_frame(i) for i in range(50)), maxsize=3) as reader:
        assert [f.index for f in reader] == list(range(50))


def test_reader_back_pressure() -> None:
    produced = 0
    made = threading.Condition()

    def frames() -> Iterator[SensorFrame]:
        nonlocal produced
        for i in range(100):
            with made:
                produced += 1
                made.notify_all()
            yield _frame(i)

    reader = BoundedReader(frames(), maxsize=4).start()
    try:
        with made:  # four queued and the fifth waiting in put() ...
            assert made.wait_for(lambda: produced >= 5, 30)
            # ... and no sixth: the reader blocks when full. A window, not a
            # synchronisation: a slower CPU can only make this check miss, never fail.
            assert not made.wait_for(lambda: produced > 5, 0.2)
        assert reader.qsize() == 4
        assert [f.index for f in reader] == list(range(100))
    finally:
        reader.close()


def test_reader_reraises_in_consumer() -> None:
    def frames() -> Iterator[SensorFrame]:
        yield _frame(0)
        yield _frame(1)
        raise ImageError("frame 2 is broken")

    seen: list[int] = []
    with BoundedReader(frames(), maxsize=2) as reader, pytest.raises(ImageError, match="frame 2"):
        for frame in reader:
            seen.append(frame.index)
    assert seen == [0, 1]


def test_close_stops_a_blocked_reader() -> None:
    def endless() -> Iterator[SensorFrame]:
        i = 0
        while True:
            yield _frame(i)
            i += 1

    reader = BoundedReader(endless(), maxsize=2)
    first = [f.index for _, f in zip(range(3), reader)]
    assert first == [0, 1, 2]
    reader.close(timeout=2.0)
    assert not any(t.name == "frame-reader" and t.is_alive() for t in threading.enumerate())


def test_stop_event_ends_a_consumer_waiting_on_a_blocked_source() -> None:
    """Issue 12, finding 7: a signal handler sets ``stop``; the replay's main thread must
    not stay blocked while the source delivers nothing."""
    blocked, release, stop = threading.Event(), threading.Event(), threading.Event()
    got_first = threading.Event()

    def stalling() -> Iterator[SensorFrame]:
        yield _frame(0)
        blocked.set()
        release.wait(30.0)  # a camera that delivers nothing more
        yield _frame(1)

    def request_stop() -> None:
        blocked.wait(30.0)
        got_first.wait(30.0)
        stop.set()

    stopper = threading.Thread(target=request_stop)
    reader = BoundedReader(stalling(), maxsize=2, stop=stop)
    stopper.start()
    try:
        frames = iter(reader)
        assert next(frames).index == 0
        got_first.set()
        assert list(frames) == []  # ends once stop is set, though no frame comes
    finally:
        release.set()
        reader.close(timeout=5.0)
        stopper.join(5.0)


def test_close_leaves_the_callers_stop_event_alone() -> None:
    stop = threading.Event()
    with BoundedReader((_frame(i) for i in range(3)), stop=stop) as reader:
        assert [f.index for f in reader] == [0, 1, 2]
    assert not stop.is_set()


def test_realtime_paces_by_timestamps() -> None:
    stamps = [100.0, 100.1, 100.2, 100.3]
    start = time.monotonic()
    with BoundedReader((_frame(i, s) for i, s in enumerate(stamps)), realtime=True) as reader:
        arrivals = [time.monotonic() - start for _ in reader]
    assert arrivals[-1] >= 0.28  # paced: never early (late is the machine's business)
    # Not paced: stamps 100 s apart, read far sooner (a bound 10 x looser than any
    # machine needs, and 10 x tighter than pacing would take).
    far_apart = [100.0, 150.0, 200.0]
    fast_start = time.monotonic()
    with BoundedReader(_frame(i, s) for i, s in enumerate(far_apart)) as reader:
        assert len(list(reader)) == 3
    assert time.monotonic() - fast_start < 10.0


def test_skipped_span_leaves_frames_out_and_blanks_the_first_of_them() -> None:
    from slam.errors import DataSourceError
    from slam.io.sources import SkippedSpanSource
    from slam.synthetic.source import make_synthetic_source

    source = make_synthetic_source("sideways", "rgbd", n_frames=12)
    seq = SkippedSpanSource(source, 3, 8, blank=2)
    frames = list(seq)
    assert seq.length == len(frames) == 12 - 5 + 2
    assert [f.index for f in frames] == [0, 1, 2, 3, 4, 8, 9, 10, 11]
    for f in frames[3:5]:
        assert not f.image.any() and f.depth_m is not None and not f.depth_m.any()
    assert frames[5].image.any() and frames[2].image.any()
    assert seq.ground_truth() is not None  # everything else passes through
    for bad in ((5, 5, 0), (-1, 3, 0), (2, 4, 3)):
        with pytest.raises(DataSourceError):
            SkippedSpanSource(source, *bad)

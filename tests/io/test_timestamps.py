"""TimestampGuard: frames whose stamp does not increase are skipped and counted, or refused."""

from __future__ import annotations

import logging

import pytest

from slam.errors import DataSourceError
from slam.io.timestamps import TimestampGuard


def test_increasing_stamps_are_all_taken() -> None:
    guard = TimestampGuard("seq")
    assert all(guard.admit(t, i) for i, t in enumerate([0.0, 0.033, 0.066, 10.0]))
    assert guard.counts.total == 0 and guard.summary() is None
    assert guard.last_stamp == 10.0


def test_duplicates_out_of_order_and_invalid_are_skipped_and_counted() -> None:
    guard = TimestampGuard("seq")
    stamps = [1.0, 2.0, 2.0, 3.0, 2.5, 1.0, float("nan"), float("inf"), 4.0]
    taken = [t for i, t in enumerate(stamps) if guard.admit(t, i)]
    assert taken == [1.0, 2.0, 3.0, 4.0]
    c = guard.counts
    assert (c.duplicate, c.out_of_order, c.invalid, c.total) == (1, 2, 2, 5)
    line = guard.summary()
    assert line is not None
    assert "skipped 5 frame(s)" in line and "first: frame 2 at 2.000000 s" in line


def test_one_warning_per_run(caplog: pytest.LogCaptureFixture) -> None:
    guard = TimestampGuard("seq")
    for i, t in enumerate([1.0, 1.0, 1.0, 0.5, 2.0]):
        guard.admit(t, i)
    with caplog.at_level(logging.WARNING, logger="slam.io.timestamps"):
        guard.warn()
    assert len(caplog.records) == 1
    assert "2 duplicate, 1 out of order" in caplog.records[0].getMessage()


@pytest.mark.parametrize(
    ("stamps", "needle"),
    [
        ([1.0, 1.0], "repeats the timestamp 1.000000 s"),
        ([1.0, 2.0, 1.5], "before the previous frame's 2.000000 s"),
        ([1.0, float("nan")], "invalid timestamp nan"),
    ],
)
def test_strict_refuses_the_first_one(stamps: list[float], needle: str) -> None:
    guard = TimestampGuard("tum:seq", strict=True)
    with pytest.raises(DataSourceError, match=needle) as info:
        for i, t in enumerate(stamps):
            guard.admit(t, i)
    assert str(info.value).startswith(f"tum:seq: frame {len(stamps) - 1} ")

"""Frames must come in time order: a guard that refuses stamps that do not increase.

A frame whose timestamp is not strictly greater than the last one taken is either a
duplicate (the same stamp again) or out of order (an earlier stamp: a shuffled
list, a clock that jumped back). Such frames are *skipped*, not taken: the
trajectory keeps one pose per instant in increasing time (what the TUM and KITTI
formats, evo and our ATE association expect), and a frame that claims to be
older than the last one cannot be placed in the sequence the tracker's motion
prior and the keyframe graph assume. Keeping them is what made a replay with two
duplicated stamps lose two frames in the evaluation and triple its ATE.

:class:`TimestampGuard` is the one place that rule lives: ``slam run`` applies it
where frames enter the system (:func:`slam.replay.run_offline`), and a live
ingest path can use the same object per stream.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from slam.errors import DataSourceError

log = logging.getLogger(__name__)


@dataclass
class StampCounts:
    """How many frames a :class:`TimestampGuard` skipped, by reason."""

    duplicate: int = 0  # stamp equal to the last one taken
    out_of_order: int = 0  # stamp earlier than the last one taken
    invalid: int = 0  # NaN or infinite stamp

    @property
    def total(self) -> int:
        """All skipped frames."""
        return self.duplicate + self.out_of_order + self.invalid


class TimestampGuard:
    """Takes a frame only when its stamp (seconds) is finite and after the last one taken.

    ``admit(stamp, index)`` returns True to take the frame, False to skip it
    (counted in :attr:`counts`); with ``strict=True`` the first such frame raises
    :class:`DataSourceError` instead. ``source`` names the stream in messages.
    Not thread-safe: one guard per stream, used by the thread that consumes it.
    """

    def __init__(self, source: str = "frames", *, strict: bool = False) -> None:
        self.source = source
        self.strict = strict
        self.counts = StampCounts()
        self.last_stamp: float | None = None
        self.first_skipped: tuple[int, float] | None = None  # (frame index, stamp)

    def admit(self, stamp: float, index: int = -1) -> bool:
        """True when frame ``index`` with ``stamp`` (s) may be taken; records it as the last."""
        problem = self._problem(stamp)
        if problem is None:
            self.last_stamp = stamp
            return True
        if self.strict:
            raise DataSourceError(f"{self.source}: frame {index} {problem}; "
                                  "timestamps must increase")
        if not math.isfinite(stamp):
            self.counts.invalid += 1
        elif stamp == self.last_stamp:
            self.counts.duplicate += 1
        else:
            self.counts.out_of_order += 1
        if self.first_skipped is None:
            self.first_skipped = (index, stamp)
        return False

    def _problem(self, stamp: float) -> str | None:
        if not math.isfinite(stamp):
            return f"has an invalid timestamp {stamp}"
        if self.last_stamp is None or stamp > self.last_stamp:
            return None
        if stamp == self.last_stamp:
            return f"repeats the timestamp {stamp:.6f} s of the frame before"
        return f"has timestamp {stamp:.6f} s, before the previous frame's {self.last_stamp:.6f} s"

    def summary(self) -> str | None:
        """One line on what was skipped, None when nothing was."""
        c = self.counts
        if c.total == 0 or self.first_skipped is None:
            return None
        index, stamp = self.first_skipped
        return (f"{self.source}: skipped {c.total} frame(s) whose timestamp did not increase "
                f"({c.duplicate} duplicate, {c.out_of_order} out of order, {c.invalid} invalid; "
                f"first: frame {index} at {stamp:.6f} s)")

    def warn(self) -> None:
        """Log :meth:`summary` once as a warning, when anything was skipped."""
        line = self.summary()
        if line is not None:
            log.warning("%s", line)

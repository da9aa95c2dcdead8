"""Where the time goes: wall time per processing stage, per thread.

Each thread that does SLAM work (tracking, local mapping, loop closing, the feature
worker) owns a :class:`StageClock` and wraps its stages in ``with clock.stage(name)``.
The clock keeps the newest ``TIMINGS_KEPT`` durations of every stage, so memory stays
bounded on a service that runs for days, and :meth:`StageClock.summary` reports them
(count, median, p99, mean and total) for ``slam run --profile`` and ``--stats``.
A stage's time includes whatever it waited for (the GIL, the map lock); waits that
matter (tracking waiting for local mapping) are stages of their own.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

TIMINGS_KEPT = 10_000  # newest durations kept per stage


class StageClock:
    """Per-stage durations (milliseconds) of one thread; safe to read from another."""

    def __init__(self, thread: str) -> None:
        self.thread = thread
        self._ms: dict[str, collections.deque[float]] = {}
        self._totals: dict[str, tuple[int, float]] = {}  # all-time count and seconds
        self._lock = threading.Lock()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block as one run of stage ``name`` (also when it raises)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, (time.perf_counter() - t0) * 1e3)

    def add(self, name: str, ms: float) -> None:
        """Record one run of ``name`` that took ``ms`` milliseconds."""
        with self._lock:
            q = self._ms.get(name)
            if q is None:
                q = self._ms[name] = collections.deque(maxlen=TIMINGS_KEPT)
            q.append(ms)
            n, s = self._totals.get(name, (0, 0.0))
            self._totals[name] = (n + 1, s + ms / 1e3)

    def median(self, name: str) -> float:
        """Median ms of the newest runs of ``name`` (0 before the first)."""
        with self._lock:
            q = self._ms.get(name)
            values = np.array(q) if q else np.zeros(0)
        return float(np.median(values)) if len(values) else 0.0

    def summary(self) -> dict[str, dict[str, float]]:
        """``{stage: {"n", "median_ms", "p99_ms", "mean_ms", "total_s"}}``: ``n`` and
        ``total_s`` count every run, the others the newest ``TIMINGS_KEPT``."""
        with self._lock:
            items = [(k, np.array(q), self._totals[k]) for k, q in self._ms.items()]
        out: dict[str, dict[str, float]] = {}
        for name, ms, (n, total) in items:
            p50, p99 = np.percentile(ms, [50, 99])
            out[name] = {"n": n, "median_ms": float(p50), "p99_ms": float(p99),
                         "mean_ms": float(ms.mean()), "total_s": total}
        return out


def format_stages(stages: dict[str, dict[str, dict[str, float]]], wall_s: float) -> str:
    """A table of ``{thread: {stage: summary}}`` with each stage's share of ``wall_s``."""
    lines = [f"{'thread':<14} {'stage':<18} {'runs':>6} {'median ms':>10} {'p99 ms':>8} "
             f"{'total s':>8} {'% wall':>7}"]
    for thread, by_stage in stages.items():
        for name, s in sorted(by_stage.items(), key=lambda kv: -kv[1]["total_s"]):
            share = 100.0 * s["total_s"] / wall_s if wall_s > 0 else 0.0
            lines.append(f"{thread:<14} {name:<18} {int(s['n']):>6} {s['median_ms']:>10.2f} "
                         f"{s['p99_ms']:>8.2f} {s['total_s']:>8.2f} {share:>6.1f}%")
    return "\n".join(lines)

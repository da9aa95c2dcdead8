"""Run statistics: peak memory of this process and latency percentiles."""

from __future__ import annotations

import math
import resource
import sys

import numpy as np
from numpy.typing import ArrayLike


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB.

    ``ru_maxrss`` is in KiB on Linux and in bytes on macOS; falls back to psutil's
    current RSS (a lower bound of the peak) where ``resource`` reports nothing.
    """
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if maxrss > 0:
        bytes_ = maxrss if sys.platform == "darwin" else maxrss * 1024
        return bytes_ / 2**20
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


def latency_summary(ms: ArrayLike) -> dict[str, float]:
    """Median, 95th and 99th percentile and mean of latencies (any shape, milliseconds).

    Non-finite entries are ignored; with no finite entry every value is NaN.
    """
    values = np.asarray(ms, dtype=np.float64).reshape(-1)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"median": math.nan, "p95": math.nan, "p99": math.nan, "mean": math.nan}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {
        "median": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "mean": float(values.mean()),
    }

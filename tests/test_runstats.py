"""Peak memory and latency percentiles."""

from __future__ import annotations

import math

import numpy as np
import psutil
import pytest

from slam.runstats import latency_summary, peak_rss_mb


def test_peak_rss_is_at_least_the_current_rss_and_grows_with_a_big_array() -> None:
    current_mb = psutil.Process().memory_info().rss / 2**20
    assert peak_rss_mb() >= current_mb - 1.0
    before = peak_rss_mb()
    block = np.ones(int(current_mb + 150) * 2**20 // 8)  # more than the process holds now
    after = peak_rss_mb()
    assert after >= before + 100
    assert after >= block.nbytes / 2**20
    del block


def test_latency_summary_percentiles() -> None:
    summary = latency_summary(np.arange(1, 101, dtype=float))
    assert summary == pytest.approx({"median": 50.5, "p95": 95.05, "p99": 99.01, "mean": 50.5})


def test_latency_summary_ignores_non_finite_and_handles_empty() -> None:
    assert latency_summary([1.0, np.nan, 3.0, np.inf])["median"] == 2.0
    assert all(math.isnan(v) for v in latency_summary([]).values())

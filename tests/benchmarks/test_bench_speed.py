"""The speed table beside ORB-SLAM3: per-round ratios, medians and the stage table."""

from __future__ import annotations

from benchmarks.bench_speed import CASES, aggregate, markdown, stage_ms_per_frame


def _ours(fps: float, ate: float) -> dict:  # type: ignore[type-arg]
    return {"fps": fps, "ate_rmse_m": ate, "frames": 100, "tracked_ratio": 1.0,
            "keyframes": 10, "track_ms_median": 20.0, "track_ms_p99": 50.0,
            "peak_rss_mb": 300.0, "startup_s": 0.1,
            "stages": {"features": {"orb": {"total_s": 0.8}},
                       "mapping": {"fuse": {"total_s": fps / 100}}}}


def _peer(fps: float) -> dict:  # type: ignore[type-arg]
    return {"fps": fps, "ate_rmse_m": 0.02, "frames": 100, "tracked_frames": 95,
            "keyframes": 12}


def test_ratios_are_per_round_and_stages_per_frame() -> None:
    row = aggregate(CASES[0], [_ours(30.0, 0.021), _ours(40.0, 0.023), {"error": "boom"}],
                    [_peer(60.0), _peer(40.0), _peer(50.0)])
    assert row["fps_ratio_per_round"] == [0.5, 1.0]  # the failed round pairs with nothing
    assert row["fps_ratio"] == 0.75 and row["ours_fps"] == 35.0 and row["orbslam3_fps"] == 50.0
    assert row["ours_ate_m"] == 0.022 and row["orbslam3_tracked"] == 0.95
    assert row["stage_ms_per_frame"]["features/orb"] == 8.0  # 0.8 s over 100 frames
    assert row["errors"] == ["boom"]
    md = markdown([row], {"rounds": 3, "machine": "test", "date": "today"})
    assert "**0.75** (0.50, 1.00)" in md and "| features/orb | 8.00 |" in md
    assert "- tum_fr1_rpy/rgbd: boom" in md


def test_stage_ms_per_frame_of_a_run_without_stages() -> None:
    assert stage_ms_per_frame({"frames": 0}) == {}

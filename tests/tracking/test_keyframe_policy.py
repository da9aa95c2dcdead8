"""The keyframe rules, one at a time, and the revisit rule's geometry."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from slam.config import TrackingConfig
from slam.geometry.lie import make_pose, so3_exp
from slam.tracking.keyframe_policy import KeyframeEvidence, KeyframePolicy

# A frame in mid-sequence: not yet due by count, mapping busy, tracking strong.
QUIET = KeyframeEvidence(frames_since=5, n_keyframes=10, n_inliers=300, n_ref_tracked=320,
                         n_ref_points=400, tracked_close=250, untracked_close=20,
                         mapping_idle=False)


def _ev(**changes: object) -> KeyframeEvidence:
    return dataclasses.replace(QUIET, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize("sensor", ["mono", "rgbd"])
def test_a_quiet_frame_is_no_keyframe(sensor: str) -> None:
    assert not KeyframePolicy(TrackingConfig(), sensor).wanted(QUIET)


def test_timing_rules_need_a_need_rule_too() -> None:
    p = KeyframePolicy(TrackingConfig(), "rgbd")
    due = _ev(frames_since=30)
    assert p.max_frames_passed(due) and not p.wanted(due)  # tracking is still strong
    assert p.wanted(_ev(frames_since=30, n_inliers=200))  # 200 < 0.75 x 320
    assert p.wanted(_ev(mapping_idle=True, n_inliers=200))
    assert not p.wanted(_ev(n_inliers=200))  # a need but no timing rule


def test_weak_tracking_and_unmapped_close_points_are_depth_rules() -> None:
    rgbd, mono = KeyframePolicy(TrackingConfig(), "rgbd"), KeyframePolicy(TrackingConfig(), "mono")
    weak = _ev(n_inliers=70)  # < 0.25 x 320
    assert rgbd.tracking_weak(weak) and rgbd.wanted(weak)
    assert not mono.tracking_weak(weak)
    close = _ev(tracked_close=90, untracked_close=80)
    assert rgbd.close_points_unmapped(close) and rgbd.wanted(close)
    assert not mono.close_points_unmapped(close)


def test_ratios_per_sensor_and_for_the_first_keyframe() -> None:
    ev = _ev(frames_since=30, n_inliers=270)  # 0.84 of the reference's points
    assert not KeyframePolicy(TrackingConfig(), "rgbd").few_reference_points(ev)  # 0.75
    assert KeyframePolicy(TrackingConfig(), "mono").few_reference_points(ev)  # 0.9
    first = _ev(n_keyframes=1, n_inliers=140)
    assert not KeyframePolicy(TrackingConfig(), "rgbd").few_reference_points(first)  # 0.4


def test_low_overlap_and_too_few_inliers() -> None:
    p = KeyframePolicy(TrackingConfig(), "rgbd")
    thin = _ev(frames_since=30, n_inliers=100, n_ref_tracked=120)  # 100 < 0.3 x 400
    assert p.low_overlap(thin) and p.wanted(thin)
    off = KeyframePolicy(TrackingConfig(keyframe_overlap_ratio=0.0), "rgbd")
    assert not off.low_overlap(thin)
    assert not p.wanted(_ev(frames_since=30, n_inliers=15, n_ref_tracked=320))


def _cam(yaw_deg: float, centre: list[float]) -> np.ndarray:
    """``T_cam_world`` of a camera turned ``yaw_deg`` about y with its centre at ``centre``."""
    R = so3_exp(np.array([0.0, np.radians(yaw_deg), 0.0]))
    return make_pose(R, -R @ np.array(centre))


def test_the_revisit_rule_compares_angles_and_parallax() -> None:
    p = KeyframePolicy(TrackingConfig(keyframe_revisit_deg=5.0), "rgbd")
    poses = _cam(20.0, [0.5, 0.0, 1.0])[None]
    depth = 2.0  # tan(5 deg) x 2 m = 17.5 cm of baseline
    assert p.revisits(_cam(20.0, [0.5, 0.0, 1.0]), poses, depth)
    assert p.revisits(_cam(24.0, [0.6, 0.0, 1.0]), poses, depth)  # 4 deg, 10 cm
    assert not p.revisits(_cam(26.0, [0.5, 0.0, 1.0]), poses, depth)  # 6 deg
    assert not p.revisits(_cam(20.0, [0.5, 0.2, 1.0]), poses, depth)  # 20 cm
    assert p.revisits(_cam(20.0, [0.5, 0.2, 1.0]), poses, 4.0)  # the same, twice as far
    assert not p.revisits(_cam(20.0, [0.5, 0.0, 1.0]), np.zeros((0, 4, 4)), depth)
    assert not p.revisits(_cam(20.0, [0.5, 0.0, 1.0]), poses, 0.0)  # no depth known
    assert not KeyframePolicy(TrackingConfig(), "rgbd").revisits(poses[0], poses, depth)

"""The local map of a tracked frame: which keyframes, and matching their points."""

from __future__ import annotations

import numpy as np
import pytest

from slam.config import Sensor, SlamConfig
from slam.map.map import COVISIBILITY_MIN_SHARED, Map
from slam.tracking.local_map import local_keyframes, search_local_points
from tests.map.factories import (
    K_SMALL,
    SCALES,
    camera_at,
    make_frame,
    make_keyframe,
    map_with_keyframes,
    project,
    share_points,
)


def _chain() -> tuple[Map, list[int], list[int]]:
    """kf0..kf4: points A seen by kf0, kf1; B by kf1, kf2; C by kf2, kf3; kf4 alone."""
    m, kfs = map_with_keyframes(5)
    n = COVISIBILITY_MIN_SHARED + 5
    a = share_points(m, kfs[0:2], n)
    b = share_points(m, kfs[1:3], n - 2, start=n)
    share_points(m, kfs[2:4], n, start=2 * n)
    for kf in kfs:
        m.update_connections(kf.id)
    return m, a, b


def test_local_keyframes_most_shared_first_then_their_neighbours() -> None:
    m, a, b = _chain()
    matched = np.array(a + b, np.int64)  # kf1 sees all, kf0 A, kf2 B
    local, ref = local_keyframes(m, matched, limit=2)  # type: ignore[misc]
    assert ref == 1
    assert local == [1, 0, 2]  # kf2 joins as kf1's covisible neighbour, kf3 does not
    everyone, _ = local_keyframes(m, matched, limit=5)  # type: ignore[misc]
    assert everyone == [1, 0, 2, 3]  # kf3 through kf2; kf4 shares nothing
    m.erase_keyframe(2)
    local, _ = local_keyframes(m, matched, limit=2)  # type: ignore[misc]
    assert 2 not in local


def test_local_keyframes_without_seen_points() -> None:
    m, _, _ = _chain()
    assert local_keyframes(m, np.array([10**6], np.int64), 3) is None
    assert local_keyframes(m, np.zeros(0, np.int64), 3) is None


@pytest.mark.parametrize("counting", [True, False])
def test_search_local_points_matches_the_projected_points(counting: bool) -> None:
    """Points of a keyframe, seen again by a frame 5 cm to the side with the same
    descriptors: each is matched to its keypoint; the frame's own match is kept; the
    visible counts grow only when counting."""
    rng = np.random.default_rng(2)
    m = Map()
    xyz = np.column_stack([rng.uniform(-1, 1, 40), rng.uniform(-0.7, 0.7, 40),
                           rng.uniform(3, 5, 40)])
    uv_kf, _ = project(K_SMALL, camera_at(0.0), xyz)
    kf = make_keyframe(m, make_frame(uv_kf, rng=rng), camera_at(0.0))
    pids = m.add_points(xyz, kf, np.arange(40)).tolist()
    m.update_normals_and_depths(pids)
    T = camera_at(0.05)
    uv, _ = project(K_SMALL, T, xyz)
    frame = make_frame(uv[::-1], descriptors=kf.frame.descriptors[::-1], T_cam_world=T)
    frame.point_ids[39] = pids[0]  # already matched (keypoint 39 shows point 0)
    search_local_points(frame, m, [kf.id], K_SMALL, SlamConfig(), Sensor.MONO, SCALES,
                        recovered=False, counting=counting)
    assert frame.point_ids.tolist() == pids[::-1]
    visible = m.store.get("n_visible", np.array(pids))
    assert visible.tolist() == [2 if counting else 1] * 40

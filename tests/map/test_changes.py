"""The map's change log: what a MapDelta reports, and that nothing is told twice."""

from __future__ import annotations

import numpy as np

from slam.geometry.lie import make_pose
from slam.map.changes import NO_COLOR_RGB
from slam.map.map import Map
from tests.map.factories import make_frame, make_keyframe


def _map(n: int) -> tuple[Map, object]:
    m = Map()
    uv = np.column_stack([np.arange(n + 5) + 5.0, np.full(n + 5, 5.0)])
    frame = make_frame(uv)
    frame.color = np.zeros((240, 320, 3), np.uint8)
    frame.color[..., 2] = 200  # red, in BGR
    kf = make_keyframe(m, frame, np.eye(4))
    for i in range(n):
        m.add_point(np.array([i, 0.0, 1.0]), kf, i)
    return m, kf


def test_the_first_delta_is_the_whole_map_then_only_changes() -> None:
    m, kf = _map(4)
    first = m.take_changes("test")
    assert first.added_ids.tolist() == [0, 1, 2, 3]
    assert np.allclose(first.added_xyz[:, 0], np.arange(4))
    assert np.all(first.added_rgb == [200, 0, 0])
    assert [k.id for k in first.keyframes_added] == [kf.id]  # type: ignore[attr-defined]
    assert first.keyframes_added[0].n_points == 4
    assert m.take_changes("test").is_empty()

    m.store.set("xyz", 1, np.array([1.0, 0.5, 1.0]))  # bundle adjustment moves a point
    m.erase_point(2)
    pid = m.add_point(np.array([9.0, 0.0, 1.0]), kf, 6).id  # type: ignore[arg-type]
    gone = m.add_point(np.array([8.0, 0.0, 1.0]), kf, 7).id  # type: ignore[arg-type]
    m.erase_point(gone)  # born and gone between two deltas: never told
    kf.T_cam_world = make_pose(np.eye(3), np.array([0.0, 0.0, 0.1]))  # type: ignore[attr-defined]
    d = m.take_changes("test")
    assert d.added_ids.tolist() == [pid] and d.moved_ids.tolist() == [1]
    assert np.allclose(d.moved_xyz, [[1.0, 0.5, 1.0]])
    assert d.removed_ids.tolist() == [2]
    assert [k.id for k in d.keyframes_moved] == [kf.id]  # type: ignore[attr-defined]


def test_points_without_colour_are_grey_and_a_cleared_map_starts_over() -> None:
    m, kf = _map(2)
    kf.frame.color = None  # type: ignore[attr-defined]
    assert np.all(m.take_changes("test").added_rgb == NO_COLOR_RGB)
    m.clear()
    cleared = m.take_changes("test")
    assert cleared.is_empty()  # nothing left: the reset itself is the system's event


def test_discarded_changes_make_the_next_delta_report_everything() -> None:
    m, _ = _map(3)
    m.take_changes("test")
    m.store.set("xyz", 0, np.array([0.0, 1.0, 1.0]))
    m.discard_changes()
    again = m.take_changes("test")
    assert again.added_ids.tolist() == [0, 1, 2] and len(again.moved_ids) == 0

"""The map relay: messages made from the system's events, as the protocol describes."""

from __future__ import annotations

import numpy as np

from server.map_relay import MapRelay, pose_fields
from slam.events import EventBus, KeyframeInfo, LoopClosed, MapDelta, MapReset
from slam.geometry.conventions import pose_from_t_q_xyzw
from slam.geometry.lie import make_pose, so3_exp
from slam.io.types import Trajectory
from slam.status import SystemSnapshot

RED = np.array([[200, 0, 10]], np.uint8)


def _points(ids: list[int], x0: float = 0.0) -> MapDelta:
    a = np.array(ids, np.int64)
    xyz = np.column_stack([a + x0, np.zeros(len(a)), np.ones(len(a))])
    return MapDelta("mapping", a, xyz, np.repeat(RED, len(a), axis=0))


def _relay(snapshot: SystemSnapshot | None = None, maxsize: int = 64
           ) -> tuple[EventBus, MapRelay]:
    bus = EventBus()
    empty = SystemSnapshot((), Trajectory(np.zeros(0), np.zeros((0, 4, 4))), ())
    return bus, MapRelay(bus.subscribe(maxsize), lambda: snapshot or empty)


def test_pose_fields_round_trip_through_the_conventions_module() -> None:
    T = make_pose(so3_exp(np.array([0.1, -0.4, 0.3])), np.array([1.0, 2.0, -3.0]))
    position, orientation = pose_fields(T)
    assert position is not None and orientation is not None and orientation[3] >= 0
    assert np.allclose(pose_from_t_q_xyzw(np.array(position), np.array(orientation)), T)
    assert pose_fields(None) == (None, None)


def test_points_added_moved_and_removed_become_map_messages() -> None:
    bus, relay = _relay()
    bus.publish(_points([0, 1, 2, 3, 4]))
    first = relay.turn().map
    assert first is not None and first.seq == 0 and not first.reset
    assert first.added_ids.tolist() == [0, 1, 2, 3, 4]
    assert np.allclose(first.added_xyz[:, 0], np.arange(5))
    assert np.all(first.added_rgb == RED)
    assert relay.turn().map is None  # nothing happened

    # Point 1 moves below the threshold, point 2 above it; 3 goes; 5 comes and goes
    # within one turn (never told), 6 comes.
    moved = MapDelta("mapping", moved_ids=np.array([1, 2]),
                     moved_xyz=np.array([[1, 0, 1.002], [2, 0.1, 1]]),
                     removed_ids=np.array([3]))
    bus.publish(moved)
    bus.publish(_points([5, 6], x0=3.0))
    bus.publish(MapDelta("mapping", removed_ids=np.array([5])))
    update = relay.turn().map
    assert update is not None and update.seq == 1
    assert update.added_ids.tolist() == [6] and np.allclose(update.added_xyz, [[9, 0, 1]])
    assert update.moved_ids.tolist() == [2] and np.allclose(update.moved_xyz, [[2, 0.1, 1]])
    assert update.removed_ids.tolist() == [3]
    ids, xyz, _, seq = relay.published()
    assert ids.tolist() == [0, 1, 2, 4, 6] and seq == 2
    assert np.allclose(xyz[1], [1, 0, 1]) and np.allclose(xyz[2], [2, 0.1, 1])  # as published

    bus.publish(MapReset("reset"))
    bus.publish(_points([10]))
    reset = relay.turn().map
    assert reset is not None and reset.reset
    assert reset.removed_ids.tolist() == [0, 1, 2, 4, 6]  # the old points, all the same
    assert reset.added_ids.tolist() == [10]


def test_keyframes_are_announced_once_and_again_when_moved() -> None:
    bus, relay = _relay()
    T0 = np.eye(4)
    bus.publish(MapDelta("tracking", keyframes_added=(KeyframeInfo(7, 1.5, T0, 3),)))
    (new,) = relay.turn().keyframes
    assert (new.id, new.moved, new.n_points) == (7, False, 3)
    slightly = make_pose(np.eye(3), np.array([0.0, 0.0, 0.003]))
    bus.publish(MapDelta("mapping", keyframes_moved=(KeyframeInfo(7, 1.5, slightly, 3),)))
    assert relay.turn().keyframes == []  # 3 mm: below the threshold
    far = make_pose(np.eye(3), np.array([0.0, 0.0, 0.5]))
    bus.publish(MapDelta("loop closing", keyframes_moved=(KeyframeInfo(7, 1.5, far, 3),)))
    (moved,) = relay.turn().keyframes
    assert moved.moved and np.allclose(moved.position, [0, 0, 0.5])


def test_loops_come_before_the_map_changes_they_made() -> None:
    bus, relay = _relay()
    bus.publish(LoopClosed(20, 3, 10.0, 1.0, 1.0, 87))
    bus.publish(_points([1, 2]))
    out = relay.turn()
    assert [(m.cur_kf, m.loop_kf, m.n_matches) for m in out.loops] == [(20, 3, 87)]
    assert out.map is not None and out.map.added_ids.tolist() == [1, 2]


def test_a_relay_that_fell_behind_starts_over_from_a_snapshot() -> None:
    snap = SystemSnapshot((KeyframeInfo(0, 0.0, np.eye(4), 2),),
                          Trajectory(np.zeros(0), np.zeros((0, 4, 4))), (),
                          np.array([4, 9]), np.array([[4.0, 0, 1], [9.0, 0, 1]]),
                          np.repeat(RED, 2, axis=0))
    bus, relay = _relay(snap, maxsize=2)
    bus.publish(_points([1]))
    relay.turn()
    for i in range(5):  # more than the queue holds: the oldest are lost
        bus.publish(_points([100 + i]))
    out = relay.turn()
    assert out.map is not None and out.map.reset
    assert out.map.removed_ids.tolist() == [1]
    # The snapshot, then the events still queued after it.
    assert out.map.added_ids.tolist() == [4, 9, 103, 104]
    assert [k.id for k in out.keyframes] == [0]

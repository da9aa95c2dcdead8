"""Map, keyframe and loop messages made from the SLAM system's events.

The system's threads publish :class:`~slam.system.MapDelta`, :class:`LoopClosed` and
:class:`MapReset` events as they change the map; the relay drains its subscription a
few times a second, keeps the map as the messages so far describe it (one row per
published point, the pose of each published keyframe) and turns what changed since
its last turn into at most one ``map`` message, ``keyframe`` messages and ``loop``
messages. Points that moved less than :data:`POINT_MOVE_EPS_M` are not sent again;
keyframes the same with :data:`KF_MOVE_EPS_M`/:data:`KF_TURN_EPS`. A relay that fell
behind (its subscription overflowed) starts over from a snapshot of the system, with a
``reset`` map message. Its memory follows the map's size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

import slam_protocol as proto
from slam.geometry.conventions import pose_to_t_q_xyzw
from slam.system import (
    KeyframeInfo,
    LoopClosed,
    MapDelta,
    MapReset,
    Subscription,
    SystemSnapshot,
)

POINT_MOVE_EPS_M = 0.005  # a point moved at least this far is published again
KF_MOVE_EPS_M = 0.005  # a keyframe moved this far ...
KF_TURN_EPS = 0.005  # ... or turned about this many radians is published with moved: true
MAX_EVENTS_PER_TURN = 1000  # events handled per turn before messages go out


@dataclass
class RelayOutput:
    """The messages of one turn, in the order to send them."""

    loops: list[proto.LoopMsg] = field(default_factory=list)
    map: proto.MapUpdateMsg | None = None
    keyframes: list[proto.KeyframeMsg] = field(default_factory=list)


def pose_fields(T_world_cam: NDArray[np.float64] | None
                ) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """``position`` (3,) and ``orientation`` (4,) xyzw of a world-from-camera pose (4x4)."""
    if T_world_cam is None:
        return None, None
    t, q_xyzw = pose_to_t_q_xyzw(np.asarray(T_world_cam, np.float64))
    return tuple(float(x) for x in t), tuple(float(x) for x in q_xyzw)


def loop_message(e: LoopClosed) -> proto.LoopMsg:
    return proto.LoopMsg(e.cur_kf_id, e.loop_kf_id, proto.Stamp.from_seconds(e.stamp),
                         proto.Stamp.from_seconds(e.loop_stamp), float(e.scale),
                         int(e.n_matches))


def _pose_moved(T_prev: NDArray[np.float64], T: NDArray[np.float64]) -> bool:
    return bool(np.linalg.norm(T[:3, 3] - T_prev[:3, 3]) > KF_MOVE_EPS_M
                or np.abs(T[:3, :3] - T_prev[:3, :3]).max() > KF_TURN_EPS)


class MapRelay:
    """Turns a subscription's events into messages; ``resync()`` gives a snapshot of the
    system (with points) when the subscription overflowed. Used by one thread."""

    def __init__(self, events: Subscription, resync: Callable[[], SystemSnapshot]) -> None:
        self.events = events
        self.resync = resync
        self.seq = 0
        self._ids = np.zeros(0, np.int64)  # published points, sorted ids
        self._xyz = np.zeros((0, 3), np.float32)
        self._rgb = np.zeros((0, 3), np.uint8)
        self._kf_poses: dict[int, NDArray[np.float64]] = {}
        self._begin_turn()

    def _begin_turn(self) -> None:
        self._reset = False
        self._removed_before: set[int] = set()  # published before a reset in this turn
        self._added: set[int] = set()
        self._moved: set[int] = set()
        self._removed: set[int] = set()
        self._kf_out: dict[int, KeyframeInfo] = {}
        self._kf_new: set[int] = set()
        self._loops: list[proto.LoopMsg] = []

    # --- one turn ------------------------------------------------------------------
    def turn(self) -> RelayOutput:
        """Drain the pending events; the messages they make."""
        for _ in range(MAX_EVENTS_PER_TURN):
            if self.events.overflowed:
                self.events.clear_overflow()
                self._start_over(self.resync())
            event = self.events.get(0.0)
            if event is None:
                break
            if isinstance(event, MapDelta):
                self._apply(event)
            elif isinstance(event, LoopClosed):
                self._loops.append(loop_message(event))
            elif isinstance(event, MapReset):
                self._clear()
        out = RelayOutput(self._loops, self._map_message(), self._keyframe_messages())
        self._begin_turn()
        return out

    def _clear(self) -> None:
        """Forget every published point and keyframe (the next map message resets)."""
        if not self._reset:
            self._removed_before = set(self._ids.tolist()) | self._removed
        self._reset = True
        self._ids = np.zeros(0, np.int64)
        self._xyz, self._rgb = np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
        self._kf_poses.clear()
        self._added.clear()
        self._moved.clear()
        self._removed.clear()
        self._kf_out.clear()
        self._kf_new.clear()

    def _start_over(self, snap: SystemSnapshot) -> None:
        self._clear()
        self._apply(MapDelta("snapshot", snap.point_ids, snap.point_xyz, snap.point_rgb,
                             keyframes_added=snap.keyframes))

    def _apply(self, d: MapDelta) -> None:
        self._apply_points(d)
        for info in d.keyframes_added:
            self._kf_poses[info.id] = info.T_world_cam
            self._kf_out[info.id] = info
            self._kf_new.add(info.id)
        for info in d.keyframes_moved:
            before = self._kf_poses.get(info.id)
            if before is None or _pose_moved(before, info.T_world_cam):
                self._kf_poses[info.id] = info.T_world_cam
                self._kf_out[info.id] = info
        for kf_id in d.keyframes_culled.tolist():
            self._kf_poses.pop(kf_id, None)
            self._kf_out.pop(kf_id, None)

    def _apply_points(self, d: MapDelta) -> None:
        gone = d.removed_ids[np.isin(d.removed_ids, self._ids)]
        keep = ~np.isin(self._ids, gone)
        ids, xyz, rgb = self._ids[keep], self._xyz[keep], self._rgb[keep]
        for pid in gone.tolist():
            if pid in self._added:
                self._added.discard(pid)  # added and gone within the turn: never sent
            else:
                self._removed.add(pid)
            self._moved.discard(pid)
        # Moved: only those published and further than the threshold.
        rows = np.minimum(np.searchsorted(ids, d.moved_ids), max(len(ids) - 1, 0))
        known = (ids[rows] == d.moved_ids) if len(ids) else np.zeros(len(d.moved_ids), bool)
        m_ids, m_rows = d.moved_ids[known], rows[known]
        m_xyz = d.moved_xyz[known].astype(np.float32)
        far = np.abs(m_xyz - xyz[m_rows]).max(axis=1, initial=0.0) > POINT_MOVE_EPS_M
        xyz[m_rows[far]] = m_xyz[far]
        self._moved.update(m_ids[far].tolist())
        # Added: new rows, kept sorted.
        new = ~np.isin(d.added_ids, ids)
        ids = np.concatenate([ids, d.added_ids[new]])
        xyz = np.concatenate([xyz, d.added_xyz[new].astype(np.float32)])
        rgb = np.concatenate([rgb, d.added_rgb[new]])
        order = np.argsort(ids, kind="stable")
        self._ids, self._xyz, self._rgb = ids[order], xyz[order], rgb[order]
        self._added.update(d.added_ids[new].tolist())

    # --- messages ------------------------------------------------------------------
    def _rows(self, pids: set[int]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        ids = np.array(sorted(pids), np.int64)
        return ids, np.searchsorted(self._ids, ids)

    def _map_message(self) -> proto.MapUpdateMsg | None:
        added, a_rows = self._rows(self._added)
        moved, m_rows = self._rows(self._moved - self._added)
        removed = np.array(sorted(self._removed_before | self._removed), np.int64)
        msg = proto.MapUpdateMsg(self.seq, added, self._xyz[a_rows], self._rgb[a_rows], moved,
                                 self._xyz[m_rows], removed, self._reset)
        if msg.is_empty() and not self._reset:
            return None
        self.seq += 1
        return msg

    def _keyframe_messages(self) -> list[proto.KeyframeMsg]:
        out = []
        for kf_id in sorted(self._kf_out):
            info = self._kf_out[kf_id]
            position, orientation = pose_fields(info.T_world_cam)
            assert position is not None and orientation is not None
            out.append(proto.KeyframeMsg(kf_id, proto.Stamp.from_seconds(info.stamp), position,
                                         orientation, info.n_points,
                                         moved=kf_id not in self._kf_new))
        return out

    def published(self) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.uint8], int]:
        """Points as the map messages so far describe them: ids (N,), xyz (N, 3), rgb
        (N, 3), and the ``seq`` the next map message will carry."""
        return self._ids.copy(), self._xyz.copy(), self._rgb.copy(), self.seq


def snapshot_fields(snap: SystemSnapshot,
                    published: tuple[NDArray[np.int64], NDArray[np.float32],
                                     NDArray[np.uint8], int],
                    last_seq: int) -> dict[str, object]:
    """The ``snapshot`` reply's fields (``docs/protocol.md``): the system's keyframes,
    trajectory and loops, and the points as the map messages so far describe them
    (``published``: ids, xyz, rgb and the next map message's seq)."""
    ids, xyz, rgb, map_seq = published
    keyframes = []
    for kf in snap.keyframes:
        position, orientation = pose_fields(kf.T_world_cam)
        keyframes.append({"id": kf.id, "stamp": proto.stamp_from_seconds(kf.stamp),
                          "position": list(position or ()),
                          "orientation": list(orientation or ())})
    traj = snap.trajectory
    quats = [pose_fields(T)[1] for T in traj.T_world_cam]
    return {
        "keyframes": keyframes,
        "points": {"ids": proto.pack_array(ids), "xyz": proto.pack_array(xyz),
                   "rgb": proto.pack_array(rgb)},
        "trajectory": {
            "stamps": proto.pack_array(traj.stamps.astype(np.float64)),
            "positions": proto.pack_array(traj.positions.astype(np.float32)),
            "orientations": proto.pack_array(np.array(quats, np.float32).reshape(-1, 4))},
        "loops": [{k: v for k, v in loop_message(e).to_dict().items() if k != "v"}
                  for e in snap.loops],
        "last_seq": last_seq,
        "map_seq": map_seq,
    }

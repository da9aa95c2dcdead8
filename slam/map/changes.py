"""What changed in the map since it was last asked: the source of :class:`MapDelta` events.

The map's mutators note each point added or erased here, and the point store notes
each point it moved (:attr:`PointStore.moved`); keyframes are compared with the poses
handed out last time (a few hundred 4x4 matrices, not the point store). Taking the
changes (:meth:`ChangeLog.take`, under the map lock) resolves them into a
self-contained :class:`~slam.events.MapDelta` and starts a new record, so the record
holds at most what changed between two takes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from slam.events import KeyframeInfo, MapDelta

if TYPE_CHECKING:
    from slam.map.map import Map

NO_COLOR_RGB = (160, 160, 160)  # a point's colour when its keyframe has no colour image


class ChangeLog:
    """Points added and removed since the last :meth:`take`, and the keyframe poses
    handed out then. A new log reports the whole map as added at the first take."""

    def __init__(self) -> None:
        self.added: set[int] = set()
        self.removed: set[int] = set()
        self._kf_poses: dict[int, NDArray[np.float64]] = {}
        self._everything = True

    def point_added(self, pid: int) -> None:
        self.added.add(pid)

    def point_removed(self, pid: int) -> None:
        if pid in self.added:
            self.added.discard(pid)  # born and gone between two takes: never told
        else:
            self.removed.add(pid)

    def reset(self) -> None:
        """The map was cleared: the next take reports what it holds then, as added."""
        self.added.clear()
        self.removed.clear()
        self._kf_poses.clear()
        self._everything = True

    def take(self, m: Map, source: str) -> MapDelta:
        """The changes since the last take (call with the map lock held)."""
        st = m.store
        if self._everything:
            self.added = set(st.live_ids().tolist())
            self.removed.clear()
            self._everything = False
        moved_set, st.moved = st.moved, set()
        added = st.alive_ids(np.array(sorted(self.added), np.int64))
        moved = st.alive_ids(np.array(sorted(moved_set - self.added), np.int64))
        removed = np.array(sorted(self.removed), np.int64)
        self.added, self.removed = set(), set()
        kf_added, kf_moved, culled = self._keyframe_changes(m)
        return MapDelta(source, added, st.get("xyz", added), point_colors(m, added), moved,
                        st.get("xyz", moved), removed, kf_added, kf_moved, culled)

    def _keyframe_changes(self, m: Map) -> tuple[tuple[KeyframeInfo, ...],
                                                   tuple[KeyframeInfo, ...], NDArray[np.int64]]:
        added: list[KeyframeInfo] = []
        moved: list[KeyframeInfo] = []
        for kf in m.keyframes.values():
            if kf.bad:
                continue
            before = self._kf_poses.get(kf.id)
            if before is not None and np.array_equal(before, kf.T_cam_world):
                continue
            self._kf_poses[kf.id] = kf.T_cam_world.copy()
            pids = kf.point_ids
            info = KeyframeInfo(kf.id, kf.timestamp, kf.T_world_cam,
                                len(m.store.alive_ids(pids[pids >= 0])))
            (added if before is None else moved).append(info)
        gone = [k for k in self._kf_poses
                if (other := m.keyframes.get(k)) is None or other.bad]
        for k in gone:
            del self._kf_poses[k]
        return tuple(added), tuple(moved), np.array(sorted(gone), np.int64)


def point_colors(m: Map, pids: NDArray[np.int64]) -> NDArray[np.uint8]:
    """RGB (N, 3) uint8 of points: the reference keyframe's colour image at the point's
    keypoint, :data:`NO_COLOR_RGB` without one (call with the map lock held)."""
    rgb = np.empty((len(pids), 3), np.uint8)
    rgb[:] = NO_COLOR_RGB
    for row, pid in enumerate(pids.tolist()):
        mp = m.points.get(pid)
        kf = m.keyframes.get(mp.ref_kf_id) if mp is not None else None
        if mp is None or kf is None or kf.frame.color is None:
            continue
        idx = mp.observations.get(kf.id)
        color = kf.frame.color
        if idx is None or color.ndim != 3:
            continue
        u, v = np.round(kf.frame.uv[idx]).astype(int)
        if 0 <= v < color.shape[0] and 0 <= u < color.shape[1]:
            rgb[row] = color[v, u, 2::-1]  # BGR -> RGB
    return rgb

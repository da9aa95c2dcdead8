"""The map: the only state shared between threads, behind one lock.

Every accessor takes the lock for a short time. Threads pass keyframe and map
point *ids*, never hold objects across a lock release for writing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import numpy as np
from numpy.typing import NDArray

from slam.events import MapDelta
from slam.map import point_upkeep
from slam.map.changes import ChangeLog
from slam.map.culled import HUSK_GRACE_CULLS, CulledKeyframes
from slam.map.keyframe import KeyFrame
from slam.map.map_point import MapPoint
from slam.map.observations import tally
from slam.map.point_store import PointStore
from slam.map.views import PointArrays, ReferenceObservations

COVISIBILITY_MIN_SHARED = 15


class Map:
    """Keyframes, map points, the covisibility graph and the spanning tree."""

    def __init__(self, scale_factor: float = 1.2, n_levels: int = 8) -> None:
        self.lock = threading.RLock()
        self.keyframes: dict[int, KeyFrame] = {}
        self.points: dict[int, MapPoint] = {}
        self.store = PointStore()
        self.scale_factor = scale_factor
        self.n_levels = n_levels
        self._next_kf = 0
        self._next_pt = 0
        self.origin_kf_id = -1
        self.version = 0  # bumped by every structural change (for the viewer / BA)
        self.culled = CulledKeyframes()
        self.changes = ChangeLog()

    @classmethod
    def restoring(cls, scale_factor: float, n_levels: int, *, next_kf_id: int,
                  next_point_id: int, origin_kf_id: int, version: int) -> Map:
        """An empty map that continues a saved one: new ids go on from its counters (the
        caller adds the saved keyframes and points)."""
        m = cls(scale_factor, n_levels)
        m._next_kf, m._next_pt = next_kf_id, next_point_id
        m.origin_kf_id, m.version = origin_kf_id, version
        return m

    def id_counters(self) -> tuple[int, int]:
        """The next keyframe id and the next point id."""
        with self.lock:
            return self._next_kf, self._next_pt

    def clear(self) -> None:
        """Forget every keyframe and point (a failed initialisation); ids keep growing."""
        with self.lock:
            self.keyframes.clear()
            self.points.clear()
            self.store = PointStore()
            self.origin_kf_id = -1
            self.culled.clear()
            self.changes.reset()
            self.version += 1

    # --- ids and insertion -------------------------------------------------
    def new_keyframe_id(self) -> int:
        with self.lock:
            self._next_kf += 1
            return self._next_kf - 1

    def add_keyframe(self, kf: KeyFrame) -> None:
        with self.lock:
            self.keyframes[kf.id] = kf
            if self.origin_kf_id < 0:
                self.origin_kf_id = kf.id
            self.version += 1

    def add_point(
        self, xyz_world: NDArray[np.float64], kf: KeyFrame, kp_idx: int
    ) -> MapPoint:
        """Create a point observed by ``kf`` at keypoint ``kp_idx`` and register it.

        Callers add further observations, then call :meth:`update_normals_and_depths`.
        """
        with self.lock:
            pid = self._next_pt
            self._next_pt += 1
            mp = MapPoint(self.store, pid, np.asarray(xyz_world, np.float64),
                          kf.frame.descriptors[kp_idx], ref_kf_id=kf.id, first_kf_id=kf.id)
            self.points[pid] = mp
            self.changes.point_added(pid)
            self.add_observation(pid, kf.id, kp_idx)
            return mp

    def add_points(self, xyz_world: NDArray[np.float64], kf: KeyFrame,
                   kp_idx: NDArray[np.int64]) -> NDArray[np.int64]:
        """:meth:`add_point` for N points at once: positions (N, 3) metres, each seen by
        ``kf`` at its keypoint of ``kp_idx`` (N,) (distinct, none with a point yet).
        Returns the new ids (N,), ascending."""
        kp_idx = np.asarray(kp_idx, np.int64)
        with self.lock:
            ids = np.arange(self._next_pt, self._next_pt + len(kp_idx), dtype=np.int64)
            self._next_pt += len(kp_idx)
            st = self.store
            st.reserve_many(ids)
            st.set("xyz", ids, np.asarray(xyz_world, np.float64).reshape(-1, 3))
            st.set("desc", ids, kf.frame.descriptors[kp_idx])
            st.set("ref_kf", ids, kf.id)
            st.set("first_kf", ids, kf.id)
            st.set("ref_kp", ids, kp_idx)
            st.count_levels(ids, kf.frame.octave[kp_idx], 1)
            st.observe_first(ids, kf.id, kp_idx)
            for pid, i in zip(ids.tolist(), kp_idx.tolist()):
                self.points[pid] = MapPoint.observed_once(st, pid, kf.id, i)
                self.changes.point_added(pid)
            kf.frame.point_ids[kp_idx] = ids
            return ids

    def add_observation(self, pid: int, kf_id: int, kp_idx: int) -> None:
        with self.lock:
            mp = self.points[pid]
            kf = self.keyframes[kf_id]
            before = mp.observations.get(kf_id)
            if before is not None:
                self.store.count_levels(pid, kf.frame.octave[before], -1)
            mp.observations[kf_id] = kp_idx
            self.store.observe(pid, kf_id, kp_idx)
            kf.frame.point_ids[kp_idx] = pid
            self.store.count_levels(pid, kf.frame.octave[kp_idx], 1)
            mp.sync_store()

    # --- queries -----------------------------------------------------------
    def get_point(self, pid: int) -> MapPoint | None:
        with self.lock:
            mp = self.points.get(pid)
            return mp if mp is not None and not mp.bad else None

    def keyframe_pose(self, kf_id: int) -> NDArray[np.float64]:
        """``T_cam_world`` (4x4) of a keyframe; a culled one follows its parent chain."""
        with self.lock:
            kf = self.keyframes[kf_id]
            T_rel = np.eye(4)
            hops = 0
            while kf.bad and kf.T_cam_parent is not None and hops < 10000:
                T_rel = T_rel @ kf.T_cam_parent
                kf = self.keyframes[kf.parent_id]
                hops += 1
            return T_rel @ kf.T_cam_world

    def add_loop_edge(self, kf_a: int, kf_b: int) -> None:
        """Remember that a loop closure linked two keyframes."""
        with self.lock:
            self.keyframes[kf_a].loop_edges.add(kf_b)
            self.keyframes[kf_b].loop_edges.add(kf_a)
            self.version += 1

    def good_keyframes(self) -> list[KeyFrame]:
        with self.lock:
            return [kf for kf in self.keyframes.values() if not kf.bad]

    def n_points(self) -> int:
        with self.lock:
            return sum(1 for p in self.points.values() if not p.bad)

    def n_keyframes(self) -> int:
        with self.lock:
            return sum(1 for k in self.keyframes.values() if not k.bad)

    def points_of(self, kf_ids: Iterable[int]) -> list[int]:
        """Distinct live map point ids observed by the given keyframes."""
        return self.point_ids_of(kf_ids).tolist()

    def point_ids_of(self, kf_ids: Iterable[int],
                     exclude: NDArray[np.int64] | None = None) -> NDArray[np.int64]:
        """Distinct live map point ids (sorted array) observed by the given keyframes,
        leaving out ``exclude``."""
        with self.lock:
            arrays = [kf.point_ids for k in kf_ids
                      if (kf := self.keyframes.get(k)) is not None and not kf.bad]
            if not arrays:
                return np.zeros(0, np.int64)
            return self.store.distinct_alive(np.concatenate(arrays), exclude)

    def n_tracked_points(self, kf_id: int, min_obs: int) -> int:
        """Points of a keyframe seen by at least ``min_obs`` keyframes."""
        return int(np.count_nonzero(self.observation_counts(kf_id) >= min_obs))

    def observation_counts(self, kf_id: int) -> NDArray[np.int64]:
        """How many keyframes see each live point of a keyframe, (M,)."""
        with self.lock:
            kf = self.keyframes[kf_id]
            _, _, (levels,) = self.store.gather_mask(kf.point_ids[kf.point_ids >= 0],
                                                     ("obs_levels",))
            return levels.sum(axis=1, dtype=np.int64)

    def point_arrays(self, pids: Iterable[int] | NDArray[np.int64]) -> PointArrays:
        """Arrays of the given points that still exist, in the order given (erased ones
        are skipped; ``found`` says which of ``pids`` are there)."""
        with self.lock:
            ids, found, (xyz, desc, normal, min_dist, max_dist) = self.store.gather_mask(
                np.fromiter(pids, np.int64) if not isinstance(pids, np.ndarray) else pids,
                ("xyz", "desc", "normal", "min_dist", "max_dist"))
            return PointArrays(ids, xyz, desc, normal, min_dist, max_dist, found)

    def reference_observations(self, pids: NDArray[np.int64]) -> ReferenceObservations:
        """Where each of ``pids`` (N,) was seen in its reference keyframe; points that are
        gone, or whose reference is culled, are left out (keyframes in the order their
        first point comes)."""
        with self.lock:
            pids = np.asarray(pids, np.int64)
            _, found, (ref_kf, ref_kp) = self.store.gather_mask(pids, ("ref_kf", "ref_kp"))
            rows = np.flatnonzero(found)
            seen = ref_kp >= 0
            rows, ref_kf, ref_kp = rows[seen], ref_kf[seen], ref_kp[seen]
            uniq, first, inverse = np.unique(ref_kf, return_index=True, return_inverse=True)
            kf_order = np.argsort(first, kind="stable")  # first-come keyframe order
            kfs = [self.keyframes.get(int(k)) for k in uniq[kf_order]]
            usable = np.array([kf is not None and not kf.bad for kf in kfs], bool)
            slot = np.full(len(uniq), -1, np.int64)  # unique index -> keyframe group
            slot[kf_order[usable]] = np.arange(int(usable.sum()))
            g = slot[inverse.reshape(-1)]
            keep = g >= 0
            rows, g, ref_kp = rows[keep], g[keep], ref_kp[keep]
            kfs_kept = [kf for kf, ok in zip(kfs, usable) if ok and kf is not None]
            uv = np.zeros((len(rows), 2))
            for i, kf in enumerate(kfs_kept):
                sel = g == i
                uv[sel] = kf.frame.uv[ref_kp[sel]]
            T = np.array([kf.T_cam_world for kf in kfs_kept]).reshape(-1, 4, 4)
            return ReferenceObservations(rows, g, uv, self.store.get("xyz", pids[rows]),
                                         [kf.id for kf in kfs_kept], T,
                                         [kf.frame for kf in kfs_kept])

    def count_visible(self, pids: NDArray[np.int64]) -> None:
        """Points that a frame should have seen (ORB-SLAM's IncreaseVisible)."""
        with self.lock:
            self.store.add("n_visible", self.store.alive_ids(pids), 1)

    def count_found(self, pids: NDArray[np.int64]) -> None:
        """Points that a frame matched (ORB-SLAM's IncreaseFound)."""
        with self.lock:
            self.store.add("n_found", self.store.alive_ids(pids), 1)

    # --- point maintenance -------------------------------------------------
    def update_normal_and_depth(self, pid: int) -> None:
        """Recompute one point's mean viewing direction and scale-invariance distances."""
        self.update_normals_and_depths([pid])

    def update_normals_and_depths(self, pids: Iterable[int]) -> None:
        """Recompute mean viewing directions and scale-invariance distances of points."""
        with self.lock:
            point_upkeep.update_normals_and_depths(self, pids)

    def update_descriptor(self, pid: int) -> None:
        """Pick the observed descriptor with the least median distance to the others."""
        with self.lock:
            point_upkeep.update_descriptor(self, pid)

    def update_descriptors(self, pids: Iterable[int]) -> None:
        """:meth:`update_descriptor` for several points (unknown ids are skipped)."""
        with self.lock:
            point_upkeep.update_descriptors(self, pids)

    def erase_observation(self, pid: int, kf_id: int) -> None:
        """Remove one observation; a point left with none is erased.

        Unlike ORB-SLAM (which erases at fewer than two, counting a stereo
        observation twice) a point seen by one stereo/RGB-D keyframe survives here;
        local mapping's culling removes weak points.
        """
        with self.lock:
            mp = self.points.get(pid)
            kf = self.keyframes.get(kf_id)
            if mp is None or kf_id not in mp.observations:
                return
            idx = mp.observations.pop(kf_id)
            self.store.unobserve(pid, kf_id)
            if kf is not None:
                self.store.count_levels(pid, kf.frame.octave[idx], -1)
                if kf.frame.point_ids[idx] == pid:
                    kf.frame.point_ids[idx] = -1
            if not mp.observations:
                self.erase_point(pid)
                return
            if mp.ref_kf_id == kf_id:
                mp.ref_kf_id = next(iter(mp.observations))
            mp.sync_store()

    def erase_point(self, pid: int) -> None:
        """Mark a point bad and detach it from every keyframe."""
        with self.lock:
            mp = self.points.get(pid)
            if mp is None:
                return
            mp.bad = True
            self.store.unobserve_all(pid)
            self.store.kill(pid)
            for kid, idx in mp.observations.items():
                kf = self.keyframes.get(kid)
                if kf is not None and kf.frame.point_ids[idx] == pid:
                    kf.frame.point_ids[idx] = -1
            mp.observations.clear()
            del self.points[pid]
            self.changes.point_removed(pid)
            self.version += 1

    def replace_point(self, old: int, new: int) -> None:
        """Fuse ``old`` into ``new``: observations of ``old`` move to ``new``; then the
        descriptor of ``new`` is chosen again."""
        with self.lock:
            if old == new or old not in self.points or new not in self.points:
                return
            mp_old, mp_new = self.points[old], self.points[new]
            for kid, idx in list(mp_old.observations.items()):
                kf = self.keyframes.get(kid)
                if kf is None:
                    continue
                if kid in mp_new.observations:
                    kf.frame.point_ids[idx] = -1
                else:
                    mp_new.observations[kid] = idx
                    self.store.observe(new, kid, idx)
                    kf.frame.point_ids[idx] = new
                    self.store.count_levels(new, kf.frame.octave[idx], 1)
            mp_new.sync_store()
            mp_new.n_visible += mp_old.n_visible
            mp_new.n_found += mp_old.n_found
            mp_old.observations.clear()
            mp_old.bad = True
            self.store.unobserve_all(old)
            self.store.kill(old)
            mp_old.replaced_by = new
            del self.points[old]
            self.changes.point_removed(old)
            self.update_descriptor(new)
            self.version += 1

    # --- covisibility and spanning tree -------------------------------------
    def update_connections(self, kf_id: int) -> None:
        """Recount shared points with every other keyframe; link those sharing >= 15."""
        with self.lock:
            kf = self.keyframes[kf_id]
            _, obs_kf, _ = self.store.observations(kf.point_ids[kf.point_ids >= 0])
            others, shared = tally(obs_kf[obs_kf != kf_id])
            if len(others) == 0:
                return
            strong = shared >= COVISIBILITY_MIN_SHARED
            if not np.any(strong):  # the one sharing most (the first of equals) alone
                strong = np.arange(len(shared)) == int(np.argmax(shared))
            links = dict(zip(others[strong].tolist(), shared[strong].tolist()))
            for other, w in links.items():
                okf = self.keyframes.get(other)
                if okf is None or okf.bad:
                    continue
                okf.covisible[kf_id] = w
                okf.ordered_covisible = _ordered(okf.covisible)
            kf.covisible = links
            kf.ordered_covisible = _ordered(links)
            if kf.parent_id < 0 and kf_id != self.origin_kf_id:
                parent = kf.ordered_covisible[0]
                kf.parent_id = parent
                self.keyframes[parent].children.add(kf_id)

    def erase_keyframe(self, kf_id: int) -> None:
        """Remove a keyframe: drop its observations and re-link the spanning tree."""
        with self.lock:
            kf = self.keyframes.get(kf_id)
            if kf is None or kf.bad or kf_id == self.origin_kf_id or kf.loop_edges:
                return
            for other in list(kf.covisible):
                okf = self.keyframes.get(other)
                if okf is not None:
                    okf.covisible.pop(kf_id, None)
                    okf.ordered_covisible = _ordered(okf.covisible)
            for p in kf.point_ids[kf.point_ids >= 0]:
                self.erase_observation(int(p), kf_id)
            self._reparent_children(kf)
            kf.bad = True
            kf.T_cam_parent = None
            parent = self.keyframes.get(kf.parent_id)
            if parent is not None:
                parent.children.discard(kf_id)
                kf.T_cam_parent = kf.T_cam_world @ parent.T_world_cam
            self.culled.add(kf)  # from here on only its pose chain is needed
            self.version += 1

    def release_culled(self) -> None:
        """Strip the culled keyframes of a loaded map down to their pose chain."""
        with self.lock:
            self.culled.adopt(self.keyframes)

    def take_changes(self, source: str) -> MapDelta:
        """What changed since the last call (see :mod:`slam.map.changes`), as an event
        from ``source`` (the thread asking)."""
        with self.lock:
            return self.changes.take(self, source)

    def discard_changes(self) -> None:
        """Forget the changes recorded so far (nobody listens); the next
        :meth:`take_changes` reports the whole map."""
        with self.lock:
            self.changes.reset()
            self.store.moved = set()

    def n_culled(self) -> int:
        """Culled keyframes still kept (for the poses of frames tracked against them)."""
        with self.lock:
            return len(self.culled)

    def prune_culled(self, needed: Iterable[int], grace: int = HUSK_GRACE_CULLS) -> int:
        """Drop the culled keyframes no pose needs (see :class:`CulledKeyframes`):
        ``needed`` are the keyframe ids logged frames were tracked against."""
        with self.lock:
            return self.culled.prune(self.keyframes, needed, grace)

    def _reparent_children(self, kf: KeyFrame) -> None:
        """Give each child of ``kf`` the covisible candidate parent it shares most with."""
        candidates = {kf.parent_id}
        for child_id in list(kf.children):
            child = self.keyframes.get(child_id)
            if child is None or child.bad:
                continue
            best, best_w = -1, -1
            for nid, w in child.covisible.items():
                if nid in candidates and w > best_w and nid != kf.id:
                    best, best_w = nid, w
            if best < 0:
                best = kf.parent_id
            child.parent_id = best
            if best in self.keyframes:
                self.keyframes[best].children.add(child_id)
            candidates.add(child_id)
        kf.children.clear()


def _ordered(weights: dict[int, int]) -> list[int]:
    return [k for k, _ in sorted(weights.items(), key=lambda kv: -kv[1])]


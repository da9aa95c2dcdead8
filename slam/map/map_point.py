"""Map points: a 3-D position, a representative descriptor and its observations."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from slam.map.point_store import PointStore


class MapPoint:
    """A landmark. ``xyz_world`` (3,) metres; ``descriptor`` (32,) uint8;
    ``observations`` maps keyframe id -> keypoint index in that keyframe;
    ``normal`` (3,) mean viewing direction (unit); ``min_dist``/``max_dist`` the
    scale-invariance range (metres) of distances from which it can be matched.
    The numeric fields live in the map's :class:`PointStore`."""

    __slots__ = ("_ref", "_s", "bad", "id", "observations", "replaced_by")

    def __init__(
        self, store: PointStore, pid: int, xyz_world: NDArray[np.float64],
        descriptor: NDArray[np.uint8], ref_kf_id: int, first_kf_id: int,
    ) -> None:
        self._s = store
        self.id = pid
        store.reserve(pid)
        store.set("xyz", pid, xyz_world)
        store.set("desc", pid, descriptor)
        store.set("first_kf", pid, first_kf_id)
        self.observations: dict[int, int] = {}
        self.ref_kf_id = ref_kf_id
        self.bad = False
        self.replaced_by = -1

    @classmethod
    def existing(cls, store: PointStore, pid: int, ref_kf_id: int, first_kf_id: int
                 ) -> MapPoint:
        """The object of a point whose row ``store`` already holds (a loaded map)."""
        mp = cls.__new__(cls)
        mp._s, mp.id = store, pid
        store.set("first_kf", pid, first_kf_id)
        mp.observations, mp.bad, mp.replaced_by = {}, False, -1
        mp.ref_kf_id = ref_kf_id
        return mp

    @classmethod
    def observed_once(cls, store: PointStore, pid: int, kf_id: int, kp_idx: int) -> MapPoint:
        """The object of a new point seen by keyframe ``kf_id`` at keypoint ``kp_idx``,
        whose store row (position, descriptor, ``ref_kf``/``ref_kp``, ``first_kf``)
        the map has written already (:meth:`slam.map.map.Map.add_points`)."""
        mp = cls.__new__(cls)
        mp._s, mp.id, mp._ref = store, pid, kf_id
        mp.observations, mp.bad, mp.replaced_by = {kf_id: kp_idx}, False, -1
        return mp

    @property
    def first_kf_id(self) -> int:
        """The keyframe that made the point (its age is counted from there)."""
        return int(self._s.get_one("first_kf", self.id))

    @property
    def ref_kf_id(self) -> int:
        """The reference keyframe (where the point was made, or a later one). Written
        through to the store (``ref_kf``, and ``ref_kp`` its keypoint there), which
        vector reads use; read here from the object, as mapping's loops do often."""
        return self._ref

    @ref_kf_id.setter
    def ref_kf_id(self, value: int) -> None:
        self._ref = int(value)
        self._s.set("ref_kf", self.id, value)
        self._s.set("ref_kp", self.id, self.observations.get(value, -1))

    def sync_store(self) -> None:
        """Store the keypoint of the reference observation again (after
        ``observations`` changed; the map calls it, and counts the observations by
        level itself: :meth:`PointStore.count_levels`)."""
        self._s.set("ref_kp", self.id, self.observations.get(self._ref, -1))

    @property
    def xyz_world(self) -> NDArray[np.float64]:
        return self._s.get_one("xyz", self.id)

    @xyz_world.setter
    def xyz_world(self, value: NDArray[np.float64]) -> None:
        self._s.set("xyz", self.id, value)

    @property
    def descriptor(self) -> NDArray[np.uint8]:
        return self._s.get_one("desc", self.id)

    @descriptor.setter
    def descriptor(self, value: NDArray[np.uint8]) -> None:
        self._s.set("desc", self.id, value)

    @property
    def normal(self) -> NDArray[np.float64]:
        return self._s.get_one("normal", self.id)

    @normal.setter
    def normal(self, value: NDArray[np.float64]) -> None:
        self._s.set("normal", self.id, value)

    @property
    def min_dist(self) -> float:
        return float(self._s.get_one("min_dist", self.id))

    @min_dist.setter
    def min_dist(self, value: float) -> None:
        self._s.set("min_dist", self.id, value)

    @property
    def max_dist(self) -> float:
        return float(self._s.get_one("max_dist", self.id))

    @max_dist.setter
    def max_dist(self, value: float) -> None:
        self._s.set("max_dist", self.id, value)

    @property
    def n_visible(self) -> int:
        return int(self._s.get_one("n_visible", self.id))

    @n_visible.setter
    def n_visible(self, value: int) -> None:
        self._s.set("n_visible", self.id, value)

    @property
    def n_found(self) -> int:
        return int(self._s.get_one("n_found", self.id))

    @n_found.setter
    def n_found(self, value: int) -> None:
        self._s.set("n_found", self.id, value)

    @property
    def found_ratio(self) -> float:
        """Share of the frames that should have seen it where it was matched."""
        return self.n_found / max(self.n_visible, 1)

    def predict_level(self, dist: float, scale_factor: float, n_levels: int) -> int:
        """Pyramid level at which a camera ``dist`` metres away should see it."""
        return int(predict_levels(np.array([dist]), np.array([self.max_dist]), scale_factor,
                                  n_levels)[0])


def predict_levels(
    dist: NDArray[np.float64], max_dist: NDArray[np.float64], scale_factor: float, n_levels: int
) -> NDArray[np.int32]:
    """Pyramid levels (N,) at which points with scale ranges ``max_dist`` (N,) metres
    should appear to cameras ``dist`` (N,) metres away; 0 where either is not positive."""
    known = (dist > 0) & (max_dist > 0)
    ratio = np.where(known, max_dist, 1.0) / np.where(known, dist, 1.0)
    level = np.ceil(np.log(ratio) / np.log(scale_factor))
    return np.where(known, np.clip(level, 0, n_levels - 1), 0).astype(np.int32)

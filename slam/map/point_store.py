"""Dense arrays behind the map points, indexed by point id.

Tracking gathers positions, descriptors and scale ranges of thousands of points
every frame; reading them from Python objects one by one costs milliseconds.
The store keeps them in contiguous arrays (grown by doubling) so that a gather is
one fancy-indexing operation. :class:`~slam.map.map_point.MapPoint` reads and
writes its numeric fields here.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


class PointStore:
    """Per-point arrays: ``xyz`` (C, 3), ``desc`` (C, 32) uint8, ``normal`` (C, 3),
    ``min_dist``/``max_dist`` (C,) metres, ``n_visible``/``n_found`` (C,), ``alive`` (C,)."""

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = 0
        self.xyz = np.zeros((0, 3))
        self.desc = np.zeros((0, 32), np.uint8)
        self.normal = np.zeros((0, 3))
        self.min_dist = np.zeros(0)
        self.max_dist = np.zeros(0)
        self.n_visible = np.zeros(0, np.int64)
        self.n_found = np.zeros(0, np.int64)
        self.alive = np.zeros(0, bool)
        self._grow(capacity)

    def _grow(self, capacity: int) -> None:
        def grown(a: NDArray, fill: object = 0) -> NDArray:  # type: ignore[type-arg]
            out = np.full((capacity, *a.shape[1:]), fill, dtype=a.dtype)
            out[: len(a)] = a
            return out

        self.xyz = grown(self.xyz)
        self.desc = grown(self.desc)
        self.normal = grown(self.normal)
        self.min_dist = grown(self.min_dist)
        self.max_dist = grown(self.max_dist)
        self.n_visible = grown(self.n_visible)
        self.n_found = grown(self.n_found)
        self.alive = grown(self.alive, False)
        self.capacity = capacity

    def reserve(self, pid: int) -> None:
        """Make room for id ``pid`` and mark it alive."""
        if pid >= self.capacity:
            self._grow(max(2 * self.capacity, pid + 1))
        self.alive[pid] = True
        self.n_visible[pid] = 1
        self.n_found[pid] = 1

    def alive_ids(self, ids: NDArray[np.int64]) -> NDArray[np.int64]:
        """The ids (in order) that name live points."""
        ids = np.asarray(ids, np.int64)
        ok = (ids >= 0) & (ids < self.capacity)
        ids = ids[ok]
        return ids[self.alive[ids]]

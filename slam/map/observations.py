"""Where each map point's observations (keyframe id, keypoint index) live as arrays.

A point's observations are one block of two flat arrays, in the order they were
made (the order of the point's ``observations`` dictionary, which the map keeps
equal). The block's start, length and capacity are columns of the point's row in
:class:`~slam.map.point_store.PointStore`; a block that fills up moves to the end
with twice the room, and the space left behind is reclaimed by repacking once it
outweighs the blocks in use. So the observations of many points are one gather
(:meth:`ObservationSlots.gather`), for bundle-adjustment write-back, covisibility,
normals and descriptors, with no Python loop over points.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

FIRST_BLOCK = 4  # room a point gets with its first observation
REPACK_MIN_GARBAGE = 1 << 16  # slots left behind before repacking is worth it


class ObservationSlots:
    """The flat arrays ``kf`` and ``kp`` (slots ``[0, end)`` in use or left behind)."""

    def __init__(self, capacity: int = 4 * 4096) -> None:
        self.kf = np.zeros(capacity, np.int64)
        self.kp = np.zeros(capacity, np.int64)
        self.end = 0
        self.garbage = 0  # slots of abandoned blocks below ``end``

    def allocate(self, sizes: NDArray[np.int64], at: NDArray[np.int64],
                 n: NDArray[np.int64], cap: NDArray[np.int64]) -> NDArray[np.int64]:
        """New blocks of ``sizes`` (B,) slots at the end; the blocks they replace
        (start ``at``, length ``n``, capacity ``cap``, each (B,)) are copied into them
        and counted as garbage. Returns the new starts (B,). The caller must repack
        (:meth:`repack`) when :meth:`needs_repack` says so, before allocating."""
        total = int(sizes.sum())
        if self.end + total > len(self.kf):
            self._grow(self.end + total)
        starts = self.end + np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)
        self.end += total
        self.garbage += int(cap.sum())
        if len(n) and int(n.sum()):
            src = block_slots(at, n)
            dst = block_slots(starts, n)
            self.kf[dst], self.kp[dst] = self.kf[src], self.kp[src]
        return starts

    def allocate_one(self, size: int, at: int, n: int, cap: int) -> int:
        """:meth:`allocate` for one block (the common case, without array set-up)."""
        if self.end + size > len(self.kf):
            self._grow(self.end + size)
        start = self.end
        self.end += size
        self.garbage += cap
        self.kf[start: start + n] = self.kf[at: at + n]
        self.kp[start: start + n] = self.kp[at: at + n]
        return start

    def needs_repack(self) -> bool:
        return self.garbage >= REPACK_MIN_GARBAGE and self.garbage > self.end - self.garbage

    def repack(self, at: NDArray[np.int64], n: NDArray[np.int64], cap: NDArray[np.int64]
               ) -> NDArray[np.int64]:
        """Move every block (starts ``at``, lengths ``n``, capacities ``cap``: all
        points' rows) to the front, in row order; returns their new starts."""
        starts = np.concatenate(([0], np.cumsum(cap)[:-1])).astype(np.int64)
        used = int(cap.sum())
        kf = np.zeros(max(2 * used, 4 * 4096), np.int64)
        kp = np.zeros_like(kf)
        src, dst = block_slots(at, n), block_slots(starts, n)
        kf[dst], kp[dst] = self.kf[src], self.kp[src]
        self.kf, self.kp, self.end, self.garbage = kf, kp, used, 0
        return starts

    def load(self, kf: NDArray[np.int64], kp: NDArray[np.int64]) -> None:
        """Replace the contents by the observations (N,) of all points, each point's
        observations together (their blocks are then full)."""
        n = len(kf)
        self.kf = np.zeros(max(2 * n, 4 * 4096), np.int64)
        self.kp = np.zeros_like(self.kf)
        self.kf[:n], self.kp[:n] = kf, kp
        self.end, self.garbage = n, 0

    def _grow(self, need: int) -> None:
        size = max(need, 2 * len(self.kf))
        for name in ("kf", "kp"):
            old = getattr(self, name)
            new = np.zeros(size, np.int64)
            new[: self.end] = old[: self.end]
            setattr(self, name, new)


def block_slots(at: NDArray[np.int64], n: NDArray[np.int64]) -> NDArray[np.int64]:
    """The slots of blocks starting at ``at`` (B,) with ``n`` (B,) entries, block
    after block: ``at[0], at[0] + 1, ..., at[1], ...`` (sum(n),)."""
    n = np.asarray(n, np.int64)
    total = int(n.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    first = np.cumsum(n) - n  # where each block begins in the output
    return np.repeat(np.asarray(at, np.int64) - first, n) + np.arange(total, dtype=np.int64)


def tally(keys: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Each distinct key of ``keys`` (N,) in order of first appearance, and how often
    it appears: what a ``collections.Counter`` fed ``keys`` in order holds."""
    if len(keys) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    uniq, first, counts = np.unique(keys, return_index=True, return_counts=True)
    order = np.argsort(first, kind="stable")
    return uniq[order], counts[order]


def most_common(keys: NDArray[np.int64], counts: NDArray[np.int64]) -> NDArray[np.int64]:
    """``keys`` (K,) by descending ``counts``, ties in their given order
    (``Counter.most_common`` of a :func:`tally`)."""
    return keys[np.argsort(-counts, kind="stable")]

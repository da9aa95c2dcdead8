"""Dense arrays behind the map points, one row per point, rows sorted by point id.

Tracking gathers positions, descriptors and scale ranges of thousands of points
every frame; reading them from Python objects one by one costs milliseconds. The
store keeps them in contiguous arrays so that a gather is one ``searchsorted`` and
one fancy-indexing operation. Point ids only grow (new points get new ids), so a new
point is a new last row; an erased point's row is dropped when erased rows outnumber
the live ones. Memory therefore follows the number of live points, not the number of
points ever created (a service runs for days). :class:`~slam.map.map_point.MapPoint`
reads and writes its numeric fields here.

The arrays live in one table object that is replaced whole when rows move (growth,
compaction), so a reader without the map lock sees one consistent table; writers hold
the map lock. One point's row is a dictionary lookup (``MapPoint`` reads its fields one
by one in mapping's inner loops); many points' rows are one ``searchsorted``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from slam.map.observations import FIRST_BLOCK, ObservationSlots, block_slots

Field = Literal["xyz", "desc", "normal", "min_dist", "max_dist", "n_visible", "n_found",
                "ref_kf", "ref_kp", "first_kf", "obs_levels", "obs_at", "obs_n", "obs_cap"]
MAX_LEVELS = 16  # pyramid levels a point's observations are counted by (features.n_levels <=)
_LAYOUT: dict[str, tuple[Any, tuple[int, ...]]] = {
    "xyz": (np.float64, (3,)), "desc": (np.uint8, (32,)), "normal": (np.float64, (3,)),
    "min_dist": (np.float64, ()), "max_dist": (np.float64, ()),
    "n_visible": (np.int64, ()), "n_found": (np.int64, ()),
    # The reference keyframe and the point's keypoint there (-1: not observed there).
    "ref_kf": (np.int64, ()), "ref_kp": (np.int64, ()),
    "first_kf": (np.int64, ()),  # the keyframe that made the point
    # Keyframes observing the point, by the pyramid level (octave) of its keypoint there:
    # their sum is the number of observations; keyframe culling asks how many are as fine.
    "obs_levels": (np.int32, (MAX_LEVELS,)),
    # The point's block of observations in ``PointStore.obs``: start, length, room.
    "obs_at": (np.int64, ()), "obs_n": (np.int64, ()), "obs_cap": (np.int64, ()),
}
_COUNT_FROM_ONE = ("n_visible", "n_found")  # a new point was seen and found once
COMPACT_MIN_DEAD = 4096  # erased rows are dropped once there are this many and more than live
LOOKUP_SPAN_PER_ROW = 4  # a vector lookup's table spans at most this many ids per row ...
LOOKUP_MIN_SPAN = 65536  # ... plus this many (older ids are found by binary search)


class _Table:
    """Rows ``[0, n)``: ``ids`` ascending, ``alive``, one array per field, and ``index``
    (id -> row) for single lookups."""

    def __init__(self, capacity: int) -> None:
        self.n = 0
        self.ids = np.zeros(capacity, np.int64)
        self.alive = np.zeros(capacity, bool)
        self.cols = {name: np.zeros((capacity, *tail), dtype)
                     for name, (dtype, tail) in _LAYOUT.items()}
        self.index: dict[int, int] = {}
        # Built on demand by rows() for the first n rows (rows only move in a new table).
        self._lut: _Lookup | None = None

    def reindex(self) -> None:
        """Rebuild ``index`` from ``ids`` (after rows moved)."""
        self.index = dict(zip(self.ids[: self.n].tolist(), range(self.n), strict=True))

    def row(self, pid: int) -> int:
        """The row of one id; KeyError when there is none."""
        r = self.index.get(pid)
        if r is None:
            raise KeyError(f"no map point with id {pid}")
        return r

    def rows(self, ids: NDArray[np.int64]) -> NDArray[np.int64]:
        """Row of each id, -1 where there is none: a lookup table over the recent ids,
        ``searchsorted`` for the old ones below it."""
        n = self.n
        if n == 0:
            return np.full(ids.shape, -1, np.int64)
        lut = self._lut
        if lut is None or lut.n != n:
            lut = self._lut = _Lookup(self.ids[:n])
        r = np.full(ids.shape, -1, np.int64)
        j = ids - lut.lo
        recent = (j >= 0) & (j < len(lut.rows))
        r[recent] = lut.rows[j[recent]]
        if lut.n_old:
            old = (ids >= 0) & (j < 0)
            if np.any(old):
                q = ids[old]
                ro = np.minimum(np.searchsorted(self.ids[: lut.n_old], q), lut.n_old - 1)
                r[old] = np.where(self.ids[ro] == q, ro, -1)
        return r


class _Lookup:
    """Rows of the ids ``lo .. ids[-1]`` of a table's first ``n`` rows, as one array
    (-1 for ids without a row). It spans at most ``LOOKUP_SPAN_PER_ROW`` entries per row
    (plus ``LOOKUP_MIN_SPAN``), so memory follows the rows, not the ids ever made: the
    first ``n_old`` rows, older points that outlived many newer ones, are below ``lo``
    and found by ``searchsorted``. Built when a vector lookup finds the table grown."""

    def __init__(self, ids: NDArray[np.int64]) -> None:
        self.n = len(ids)
        hi = int(ids[-1])
        self.lo = max(int(ids[0]), hi + 1 - (LOOKUP_SPAN_PER_ROW * self.n + LOOKUP_MIN_SPAN))
        self.n_old = int(np.searchsorted(ids, self.lo))
        self.rows = np.full(hi + 1 - self.lo, -1, np.int64)
        self.rows[ids[self.n_old:] - self.lo] = np.arange(self.n_old, self.n)


class PointStore:
    """Per-point ``xyz`` (3,) metres, ``desc`` (32,) uint8, ``normal`` (3,),
    ``min_dist``/``max_dist`` metres, ``n_visible``/``n_found`` counts, ``ref_kf`` (the
    reference keyframe's id), ``ref_kp`` (the point's keypoint in it, -1 when it has
    none), ``first_kf`` (the keyframe that made it), ``obs_levels`` (MAX_LEVELS,)
    (keyframes observing it, by the level of its keypoint there), its observations
    (keyframe id, keypoint) in order (:mod:`slam.map.observations`), and whether the
    point is alive, by id."""

    def __init__(self, capacity: int = 4096) -> None:
        self._t = _Table(max(1, capacity))
        self._dead = 0
        self.obs = ObservationSlots()
        # Ids whose position was written since the map's changes were last taken
        # (slam.map.changes): how bundle adjustment and loop closing moves reach events.
        self.moved: set[int] = set()

    @property
    def capacity(self) -> int:
        """Rows allocated now (grows and shrinks with the live points)."""
        return len(self._t.ids)

    def __len__(self) -> int:
        """Rows in use (live points and erased ones not yet dropped)."""
        return self._t.n

    # --- lookups ---------------------------------------------------------------
    def rows(self, ids: NDArray[np.int64]) -> NDArray[np.int64]:
        """Rows (N,) of ``ids`` (N,) in the current table, -1 where unknown."""
        return self._t.rows(np.asarray(ids, np.int64))

    def alive_mask(self, ids: NDArray[np.int64]) -> NDArray[np.bool_]:
        """(N,) whether each id names a live point (False for -1 and unknown ids)."""
        t = self._t
        r = t.rows(np.asarray(ids, np.int64))
        return (r >= 0) & t.alive[np.maximum(r, 0)]

    def alive_ids(self, ids: NDArray[np.int64]) -> NDArray[np.int64]:
        """The ids (in order) that name live points."""
        ids = np.asarray(ids, np.int64)
        return ids[self.alive_mask(ids)]

    def distinct_alive(self, ids: NDArray[np.int64],
                       exclude: NDArray[np.int64] | None = None) -> NDArray[np.int64]:
        """The distinct ids of ``ids`` (any shape, repeats allowed, -1 ignored) that name
        live points and are not in ``exclude``, ascending: one mark per row, no sort
        (rows are in id order)."""
        t = self._t
        r = t.rows(np.asarray(ids, np.int64).reshape(-1))
        mark = np.zeros(t.n, bool)
        mark[r[r >= 0]] = True
        mark &= t.alive[: t.n]
        if exclude is not None and len(exclude):
            re = t.rows(np.asarray(exclude, np.int64).reshape(-1))
            mark[re[re >= 0]] = False
        return t.ids[: t.n][mark]

    def live_ids(self) -> NDArray[np.int64]:
        """Every live point id, ascending."""
        t = self._t
        return t.ids[: t.n][t.alive[: t.n]].copy()

    def get(self, name: Field, ids: NDArray[np.int64]) -> NDArray[Any]:
        """Values (N, ...) of field ``name`` for ``ids`` (N,); KeyError for an unknown id."""
        t = self._t
        r = self._known(t, ids)
        return t.cols[name][r]

    def gather(self, ids: NDArray[np.int64], names: Sequence[Field]
               ) -> tuple[NDArray[np.int64], list[NDArray[Any]]]:
        """The ids (in order) of ``ids`` (N,) that name live points, and the values of
        each field of ``names`` for them (one row lookup for every field)."""
        found, _, values = self.gather_mask(ids, names)
        return found, values

    def gather_mask(self, ids: NDArray[np.int64], names: Sequence[Field]
                    ) -> tuple[NDArray[np.int64], NDArray[np.bool_], list[NDArray[Any]]]:
        """:meth:`gather`, and which entries of ``ids`` (N,) bool were found."""
        t = self._t
        ids = np.asarray(ids, np.int64).reshape(-1)
        r = t.rows(ids)
        ok = (r >= 0) & t.alive[np.maximum(r, 0)]
        r = r[ok]
        return ids[ok], ok, [t.cols[name][r] for name in names]

    def get_one(self, name: Field, pid: int) -> Any:
        """The value of field ``name`` of one point (a copy)."""
        t = self._t
        return t.cols[name][t.row(int(pid))].copy()

    def set(self, name: Field, ids: NDArray[np.int64] | int, values: Any) -> None:
        """Write field ``name`` of ``ids`` (call with the map lock held)."""
        t = self._t
        if isinstance(ids, int | np.integer):
            t.cols[name][t.row(int(ids))] = values
            if name == "xyz":
                self.moved.add(int(ids))
            return
        ids = np.atleast_1d(ids)
        t.cols[name][self._known(t, ids)] = values
        if name == "xyz":
            self.moved.update(ids.tolist())

    def add(self, name: Field, ids: NDArray[np.int64], delta: int) -> None:
        """Add ``delta`` to a count field for each of ``ids`` (repeats add repeatedly)."""
        t = self._t
        np.add.at(t.cols[name], self._known(t, ids), delta)

    def count_levels(self, ids: NDArray[np.int64] | int, levels: NDArray[np.integer[Any]] | int,
                     delta: int) -> None:
        """Add ``delta`` to ``obs_levels`` of each id at its level (repeats add up):
        an observation made (+1) or dropped (-1). Call with the map lock held."""
        t = self._t
        col = t.cols["obs_levels"]
        if isinstance(ids, int | np.integer):
            col[t.row(int(ids)), int(levels)] += delta
            return
        np.add.at(col, (self._known(t, ids), np.asarray(levels, np.int64)), delta)

    @staticmethod
    def _known(t: _Table, ids: Any) -> NDArray[np.int64]:
        r = t.rows(np.asarray(ids, np.int64).reshape(-1))
        if np.any(r < 0):
            bad = np.asarray(ids).reshape(-1)[r < 0]
            raise KeyError(f"no map point with id {int(bad[0])}")
        return r

    # --- observations (call with the map lock held) -----------------------------
    def observe(self, pid: int, kf_id: int, kp: int) -> None:
        """Keyframe ``kf_id`` sees point ``pid`` at keypoint ``kp``: a new last
        observation, or a new keypoint for a keyframe already there (in its place)."""
        c = self._t.cols
        r = self._t.row(int(pid))
        at, n = int(c["obs_at"][r]), int(c["obs_n"][r])
        hit = np.flatnonzero(self.obs.kf[at: at + n] == kf_id)
        if len(hit):
            self.obs.kp[at + int(hit[0])] = kp
            return
        if n == c["obs_cap"][r]:
            self._repack_if_worth_it()
            at = int(c["obs_at"][r])
            cap = max(FIRST_BLOCK, 2 * n)
            c["obs_at"][r] = at = self.obs.allocate_one(cap, at, n, n)
            c["obs_cap"][r] = cap
        self.obs.kf[at + n], self.obs.kp[at + n] = kf_id, kp
        c["obs_n"][r] = n + 1

    def observe_first(self, ids: NDArray[np.int64], kf_id: int, kps: NDArray[np.int64]
                      ) -> None:
        """The first observation of each new point ``ids`` (N,): keyframe ``kf_id``
        at keypoint ``kps`` (N,)."""
        rows = self._known(self._t, ids)
        c = self._t.cols
        self._move_blocks(rows, np.full(len(rows), FIRST_BLOCK, np.int64))
        at = c["obs_at"][rows]
        self.obs.kf[at], self.obs.kp[at] = kf_id, kps
        c["obs_n"][rows] = 1

    def unobserve(self, pid: int, kf_id: int) -> None:
        """Drop keyframe ``kf_id``'s observation of ``pid`` (the others keep their order)."""
        c = self._t.cols
        r = self._t.row(int(pid))
        at, n = int(c["obs_at"][r]), int(c["obs_n"][r])
        hit = np.flatnonzero(self.obs.kf[at: at + n] == kf_id)
        if len(hit) == 0:
            return
        i, end = at + int(hit[0]), at + n
        for a in (self.obs.kf, self.obs.kp):
            a[i: end - 1] = a[i + 1: end]
        c["obs_n"][r] = n - 1

    def unobserve_all(self, pid: int) -> None:
        """Drop every observation of ``pid`` (its block becomes garbage)."""
        c = self._t.cols
        r = self._t.row(int(pid))
        self.obs.garbage += int(c["obs_cap"][r])
        c["obs_at"][r] = c["obs_n"][r] = c["obs_cap"][r] = 0

    def observations(self, ids: NDArray[np.int64]
                     ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
        """The observations of ``ids`` (N,) (unknown ids have none), point after point,
        each point's in order: the index into ``ids``, the keyframe id and the keypoint
        of each, (M,) each."""
        t = self._t
        r = t.rows(np.asarray(ids, np.int64).reshape(-1))
        ok = np.flatnonzero(r >= 0)
        n = t.cols["obs_n"][r[ok]]
        slots = block_slots(t.cols["obs_at"][r[ok]], n)
        return np.repeat(ok, n), self.obs.kf[slots], self.obs.kp[slots]

    def load_observations(self, ids: NDArray[np.int64], counts: NDArray[np.int64],
                          kf: NDArray[np.int64], kp: NDArray[np.int64]) -> None:
        """Set the observations of every point after :meth:`load`: ``counts[i]`` (N,)
        of ``kf``/``kp`` (sum(counts),) belong to ``ids[i]``, in order."""
        rows = self._known(self._t, ids)
        c = self._t.cols
        counts = np.asarray(counts, np.int64)
        self.obs.load(np.asarray(kf, np.int64), np.asarray(kp, np.int64))
        c["obs_at"][rows] = np.cumsum(counts) - counts
        c["obs_n"][rows] = c["obs_cap"][rows] = counts

    def _move_blocks(self, rows: NDArray[np.int64], sizes: NDArray[np.int64]) -> None:
        """Give the blocks of ``rows`` (B,) room for ``sizes`` (B,) observations."""
        c = self._t.cols
        self._repack_if_worth_it()
        c["obs_at"][rows] = self.obs.allocate(sizes, c["obs_at"][rows], c["obs_n"][rows],
                                              c["obs_cap"][rows])
        c["obs_cap"][rows] = sizes

    def _repack_if_worth_it(self) -> None:
        if self.obs.needs_repack():
            c, n = self._t.cols, self._t.n
            c["obs_at"][:n] = self.obs.repack(c["obs_at"][:n], c["obs_n"][:n], c["obs_cap"][:n])

    # --- life cycle --------------------------------------------------------------
    def reserve(self, pid: int) -> None:
        """Add point ``pid`` (alive, seen and found once); ids normally come in
        increasing order (a new last row), others are inserted."""
        t = self._t
        if t.n and pid <= t.ids[t.n - 1]:
            self._insert(pid)
            return
        if t.n == len(t.ids):
            t = self._resized(2 * t.n)
        row = t.n
        t.ids[row], t.alive[row] = pid, True
        t.index[int(pid)] = row
        for name, col in t.cols.items():
            col[row] = 1 if name in _COUNT_FROM_ONE else 0
        t.n += 1

    def reserve_many(self, ids: NDArray[np.int64]) -> None:
        """:meth:`reserve` for new ids (N,), ascending and above every id there is
        (one block of new last rows)."""
        ids = np.asarray(ids, np.int64)
        t = self._t
        if len(ids) == 0:
            return
        if np.any(np.diff(ids) <= 0) or (t.n and ids[0] <= t.ids[t.n - 1]):
            raise ValueError("reserve_many takes new ids in ascending order")
        if t.n + len(ids) > len(t.ids):
            t = self._resized(max(2 * t.n, t.n + len(ids)))
        a, b = t.n, t.n + len(ids)
        t.ids[a:b], t.alive[a:b] = ids, True
        t.index.update(zip(ids.tolist(), range(a, b)))
        for name, col in t.cols.items():
            col[a:b] = 1 if name in _COUNT_FROM_ONE else 0
        t.n = b

    def _insert(self, pid: int) -> None:
        t = self._t
        if pid in t.index:
            raise ValueError(f"map point {pid} exists already")
        new = _Table(max(2 * (t.n + 1), 16))
        at = int(np.searchsorted(t.ids[: t.n], pid))
        new.n = t.n + 1
        for dst, src, fill in ((new.ids, t.ids, pid), (new.alive, t.alive, True),
                               *((new.cols[k], t.cols[k], 1 if k in _COUNT_FROM_ONE else 0)
                                 for k in _LAYOUT)):
            dst[:at], dst[at], dst[at + 1: new.n] = src[:at], fill, src[at: t.n]
        new.reindex()
        self._t = new

    def load(self, ids: NDArray[np.int64], alive: NDArray[np.bool_],
             values: dict[Field, NDArray[Any]]) -> None:
        """Replace the contents by points ``ids`` (N,) (unique, any order) with their
        ``alive`` flags and field values (N, ...) (missing fields: zeros)."""
        ids = np.asarray(ids, np.int64)
        order = np.argsort(ids, kind="stable")
        if len(ids) and np.any(np.diff(ids[order]) == 0):
            raise ValueError("map point ids must be unique")
        new = _Table(max(2 * len(ids), 1024))
        new.n = len(ids)
        new.ids[: new.n], new.alive[: new.n] = ids[order], np.asarray(alive, bool)[order]
        for name, col in values.items():
            new.cols[name][: new.n] = np.asarray(col)[order]
        new.reindex()
        self._t = new
        self._dead = int(new.n - np.count_nonzero(new.alive[: new.n]))

    def kill(self, pid: int) -> None:
        """Mark point ``pid`` erased; its row goes when enough rows are erased."""
        t = self._t
        r = t.index.get(int(pid), -1)
        if r < 0 or not t.alive[r]:
            return
        t.alive[r] = False
        self._dead += 1
        if self._dead >= COMPACT_MIN_DEAD and self._dead > t.n - self._dead:
            self.compact()

    def compact(self) -> None:
        """Drop the rows of erased points (ids of erased points are unknown after)."""
        t = self._t
        keep = np.flatnonzero(t.alive[: t.n])
        new = _Table(max(2 * len(keep), 1024))
        new.n = len(keep)
        new.ids[: new.n], new.alive[: new.n] = t.ids[keep], True
        for k in _LAYOUT:
            new.cols[k][: new.n] = t.cols[k][keep]
        new.reindex()
        self._t, self._dead = new, 0

    def _resized(self, capacity: int) -> _Table:
        t = self._t
        new = _Table(max(capacity, 1))
        new.n = t.n
        new.ids[: t.n], new.alive[: t.n] = t.ids[: t.n], t.alive[: t.n]
        for k in _LAYOUT:
            new.cols[k][: t.n] = t.cols[k][: t.n]
        new.index = dict(t.index)  # a reader still holding the old table keeps its own
        self._t = new
        return new

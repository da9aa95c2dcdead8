"""Keyframe database: an inverted index word -> keyframes, queried by L1 score.

Postings (slot of the keyframe, weight of the word in it) are kept in two parts:
a compressed-sparse-row index sorted by word (contiguous per word, so a query reads
each of its words' lists in one sweep) and a small buffer of recent additions,
chained per word as linked lists. When the buffer is full (or erased keyframes
hold more postings than live ones) a Numba counting sort merges the buffer into
the index, dropping erased keyframes and renumbering slots.

The score is the L1 score of :meth:`slam.place.vocabulary.Vocabulary.score`
(sum over common words of the smaller weight). All methods take the database's
own lock: the loop-closing thread queries while tracking adds.
"""

from __future__ import annotations

import threading
from collections.abc import Collection

import numpy as np
from numba import njit

from slam.place.vocabulary import BowVector

_BUFFER_ENTRIES = 32768
_COMPACT_MIN_DEAD = 32768


@njit(cache=True, nogil=True)
def _append(head, nxt, buf_word, buf_slot, buf_weight, n_buf, words, weights, slot):  # type: ignore[no-untyped-def]
    """Chain one keyframe's postings into the buffer at ``n_buf``; the new buffer size."""
    e = n_buf
    for j in range(words.shape[0]):
        w = words[j]
        buf_word[e] = w
        buf_slot[e] = slot
        buf_weight[e] = weights[j]
        nxt[e] = head[w]
        head[w] = e
        e += 1
    return e


@njit(cache=True, nogil=True)
def _merge(offsets, slot, weight, buf_word, buf_slot, buf_weight, n_buf, alive, new_slot):  # type: ignore[no-untyped-def]
    """Index + buffer -> new index (offsets, slot, weight) of the live postings, slots
    renumbered by ``new_slot``; within a word, postings stay in slot order."""
    n_words = offsets.shape[0] - 1
    counts = np.zeros(n_words + 1, np.int64)
    for w in range(n_words):
        for e in range(offsets[w], offsets[w + 1]):
            if alive[slot[e]]:
                counts[w + 1] += 1
    for e in range(n_buf):
        if alive[buf_slot[e]]:
            counts[buf_word[e] + 1] += 1
    out_offsets = np.cumsum(counts)
    n = out_offsets[n_words]
    out_slot = np.empty(n, np.int32)
    out_weight = np.empty(n, np.float64)
    fill = out_offsets[:n_words].copy()
    for w in range(n_words):
        for e in range(offsets[w], offsets[w + 1]):
            if alive[slot[e]]:
                out_slot[fill[w]] = new_slot[slot[e]]
                out_weight[fill[w]] = weight[e]
                fill[w] += 1
    for e in range(n_buf):
        s = buf_slot[e]
        if alive[s]:
            w = buf_word[e]
            out_slot[fill[w]] = new_slot[s]
            out_weight[fill[w]] = buf_weight[e]
            fill[w] += 1
    return out_offsets, out_slot, out_weight


@njit(cache=True, nogil=True)
def _accumulate(offsets, slot, weight, head, nxt, buf_slot, buf_weight, alive, words, weights,  # type: ignore[no-untyped-def]
                n_slots):
    """L1 scores (n_slots,) of the live slots against the query (words, weights)."""
    scores = np.zeros(n_slots, np.float64)
    n_words = head.shape[0]
    for j in range(words.shape[0]):
        w = words[j]
        if w < 0 or w >= n_words:
            continue
        qw = weights[j]
        for e in range(offsets[w], offsets[w + 1]):
            s = slot[e]
            if alive[s]:
                scores[s] += min(qw, weight[e])
        e = head[w]
        while e >= 0:
            s = buf_slot[e]
            if alive[s]:
                scores[s] += min(qw, buf_weight[e])
            e = nxt[e]
    return scores


class KeyframeDatabase:
    """Inverted index over the BoW vectors of keyframes (see the module docstring).

    ``n_words`` is the vocabulary size; word ids of added vectors must be below it.
    """

    def __init__(self, n_words: int) -> None:
        if n_words < 1:
            raise ValueError(f"n_words must be positive, got {n_words}")
        self.n_words = int(n_words)
        self._lock = threading.RLock()
        self._reset()

    def _reset(self) -> None:
        self._offsets = np.zeros(self.n_words + 1, dtype=np.int64)
        self._slot = np.empty(0, dtype=np.int32)
        self._weight = np.empty(0, dtype=np.float64)
        self._head = np.full(self.n_words, -1, dtype=np.int64)
        self._new_buffer(_BUFFER_ENTRIES)
        self._dead_entries = 0
        self._kf_of_slot = np.empty(64, dtype=np.int64)
        self._alive = np.zeros(64, dtype=np.bool_)
        self._n_slots = 0
        self._slot_of: dict[int, int] = {}
        self._bows: dict[int, BowVector] = {}

    def _new_buffer(self, capacity: int) -> None:
        self._next = np.empty(capacity, dtype=np.int64)
        self._buf_word = np.empty(capacity, dtype=np.int32)
        self._buf_slot = np.empty(capacity, dtype=np.int32)
        self._buf_weight = np.empty(capacity, dtype=np.float64)
        self._n_buf = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._slot_of)

    def __contains__(self, kf_id: object) -> bool:
        with self._lock:
            return kf_id in self._slot_of

    def add(self, kf_id: int, bow: BowVector) -> None:
        """Index keyframe ``kf_id`` (replacing an earlier vector of the same id)."""
        words = np.ascontiguousarray(bow.words, dtype=np.int32)
        weights = np.ascontiguousarray(bow.weights, dtype=np.float64)
        if words.shape != weights.shape or words.ndim != 1:
            raise ValueError("BoW words and weights must be (M,) arrays of one length")
        if len(words) and (words.min() < 0 or words.max() >= self.n_words):
            raise ValueError(f"word ids must be in [0, {self.n_words})")
        with self._lock:
            if kf_id in self._slot_of:
                self._erase_locked(kf_id)
            if self._n_buf + len(words) > len(self._next):
                self._merge()
                if len(words) > len(self._next):
                    self._new_buffer(len(words))
            if self._n_slots == len(self._alive):
                self._kf_of_slot = np.resize(self._kf_of_slot, 2 * len(self._alive))
                self._alive = np.concatenate([self._alive, np.zeros_like(self._alive)])
            slot = self._n_slots
            self._kf_of_slot[slot] = kf_id
            self._alive[slot] = True
            self._n_slots += 1
            self._n_buf = _append(self._head, self._next, self._buf_word, self._buf_slot,
                                  self._buf_weight, self._n_buf, words, weights, slot)
            self._slot_of[kf_id] = slot
            self._bows[kf_id] = BowVector(words, weights)

    def _merge(self) -> None:
        """Move the buffer into the index, drop erased keyframes, renumber the slots."""
        alive = self._alive[:self._n_slots]
        new_slot = (np.cumsum(alive) - 1).astype(np.int32)
        self._offsets, self._slot, self._weight = _merge(
            self._offsets, self._slot, self._weight, self._buf_word, self._buf_slot,
            self._buf_weight, self._n_buf, alive, new_slot)
        self._kf_of_slot = self._kf_of_slot[:self._n_slots][alive].copy()
        self._n_slots = len(self._kf_of_slot)
        self._alive = np.zeros(max(2 * self._n_slots, 64), dtype=np.bool_)
        self._alive[:self._n_slots] = True
        self._kf_of_slot = np.resize(self._kf_of_slot, len(self._alive))
        self._slot_of = {int(kf): i for i, kf in enumerate(self._kf_of_slot[:self._n_slots])}
        self._head.fill(-1)
        self._n_buf = 0
        self._dead_entries = 0

    def erase(self, kf_id: int) -> None:
        """Remove keyframe ``kf_id`` (no-op when absent)."""
        with self._lock:
            if kf_id in self._slot_of:
                self._erase_locked(kf_id)
                live = len(self._slot) + self._n_buf - self._dead_entries
                if self._dead_entries > max(live, _COMPACT_MIN_DEAD):
                    self._merge()

    def _erase_locked(self, kf_id: int) -> None:
        slot = self._slot_of.pop(kf_id)
        self._alive[slot] = False
        self._dead_entries += len(self._bows.pop(kf_id))

    def clear(self) -> None:
        """Remove every keyframe."""
        with self._lock:
            self._reset()

    def query(self, bow: BowVector, max_results: int, exclude: Collection[int] = (),
              min_score: float = 0.0) -> list[tuple[int, float]]:
        """Up to ``max_results`` (keyframe id, L1 score) pairs, best first (ties: older
        keyframe first), among keyframes sharing a word with ``bow`` and scoring at least
        ``min_score``, leaving out the ids in ``exclude``."""
        words = np.ascontiguousarray(bow.words, dtype=np.int64)
        weights = np.ascontiguousarray(bow.weights, dtype=np.float64)
        if max_results <= 0:
            return []
        with self._lock:
            scores = _accumulate(self._offsets, self._slot, self._weight, self._head,
                                 self._next, self._buf_slot, self._buf_weight, self._alive,
                                 words, weights, self._n_slots)
            for kf in exclude:
                slot = self._slot_of.get(kf)
                if slot is not None:
                    scores[slot] = 0.0
            kf_of_slot = self._kf_of_slot[:self._n_slots].copy()
        slots = np.flatnonzero((scores > 0.0) & (scores >= min_score))
        if len(slots) > max_results:
            top = np.argpartition(-scores[slots], max_results - 1)[:max_results]
            cut = scores[slots[top]].min()
            slots = slots[scores[slots] >= cut]  # keep ties at the cut for a stable order
        slots = slots[np.lexsort((slots, -scores[slots]))][:max_results]
        return [(int(kf_of_slot[s]), float(scores[s])) for s in slots]

    def bow_of(self, kf_id: int) -> BowVector | None:
        """The stored vector of ``kf_id``, None when absent."""
        with self._lock:
            return self._bows.get(kf_id)

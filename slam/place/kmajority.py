"""Hierarchical k-majority clustering of binary descriptors (Numba kernels).

k-majority is k-medians under the Hamming distance: each descriptor goes to the
nearest centre, and a centre becomes the per-bit majority of its members. Seeds
are chosen greedy k-means++ style (candidates drawn with probability proportional
to the squared distance to the nearest seed so far; the best of a few is kept).
:func:`build_tree` applies it recursively, ``k`` children per node, down to
``depth`` levels; nodes are numbered breadth first and the children of a node are
consecutive.

Descriptors are (N, 32) uint8 (256-bit ORB); the kernels read them as (N, 4) uint64.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

import numpy as np
from numba import njit
from numpy.typing import NDArray

from slam.features.matching import _hamming, as_words

log = logging.getLogger(__name__)

DESCRIPTOR_BYTES = 32


@njit(cache=True, nogil=True)
def _seed_centres(words, k, uniform):  # type: ignore[no-untyped-def]
    """Indices (<= k,) of greedy k-means++ seeds among ``words`` (n, 4).

    ``uniform`` (k, T) in [0, 1): the first seed is ``uniform[0, 0]``; each next one is
    the best (lowest summed squared distance) of T candidates drawn with probability
    proportional to the squared distance to the nearest seed so far.
    """
    n = words.shape[0]
    n_trials = uniform.shape[1]
    chosen = np.empty(k, np.int64)
    chosen[0] = min(int(uniform[0, 0] * n), n - 1)
    d2 = np.empty(n, np.float64)
    for i in range(n):
        d = _hamming(words[i], words[chosen[0]])
        d2[i] = d * d
    trial_d2 = np.empty(n, np.float64)
    best_d2 = np.empty(n, np.float64)
    n_chosen = 1
    for c in range(1, k):
        total = d2.sum()
        if total <= 0.0:
            break  # every descriptor equals a seed: fewer distinct clusters than k
        best_pick = -1
        best_potential = np.inf
        for t in range(n_trials):
            target = uniform[c, t] * total
            acc = 0.0
            pick = -1
            for i in range(n):
                if d2[i] > 0.0:
                    acc += d2[i]
                    pick = i
                    if acc >= target:
                        break
            potential = 0.0
            for i in range(n):
                d = _hamming(words[i], words[pick])
                trial_d2[i] = min(d2[i], d * d)
                potential += trial_d2[i]
            if potential < best_potential:
                best_potential = potential
                best_pick = pick
                best_d2[:] = trial_d2
        chosen[n_chosen] = best_pick
        n_chosen += 1
        d2[:] = best_d2
    return chosen[:n_chosen]


@njit(cache=True, nogil=True)
def _assign(words, centres, labels):  # type: ignore[no-untyped-def]
    """Nearest centre (first on ties) of each descriptor into ``labels``; number changed."""
    changed = 0
    for i in range(words.shape[0]):
        best = 257
        best_c = 0
        for c in range(centres.shape[0]):
            d = _hamming(words[i], centres[c])
            if d < best:
                best = d
                best_c = c
        if labels[i] != best_c:
            labels[i] = best_c
            changed += 1
    return changed


@njit(cache=True, nogil=True)
def _majority(desc, labels, n_clusters):  # type: ignore[no-untyped-def]
    """Per-bit majority centres (n_clusters, 32) uint8 and cluster sizes (n_clusters,)."""
    ones = np.zeros((n_clusters, DESCRIPTOR_BYTES * 8), np.int32)
    sizes = np.zeros(n_clusters, np.int64)
    for i in range(desc.shape[0]):
        c = labels[i]
        sizes[c] += 1
        for b in range(DESCRIPTOR_BYTES):
            v = desc[i, b]
            for j in range(8):
                if v & (1 << j):
                    ones[c, b * 8 + j] += 1
    centres = np.zeros((n_clusters, DESCRIPTOR_BYTES), np.uint8)
    for c in range(n_clusters):
        for b in range(DESCRIPTOR_BYTES):
            v = 0
            for j in range(8):
                if 2 * ones[c, b * 8 + j] > sizes[c]:
                    v |= 1 << j
            centres[c, b] = v
    return centres, sizes


def k_majority(
    desc: NDArray[np.uint8], k: int, rng: np.random.Generator, max_iter: int = 10
) -> tuple[NDArray[np.uint8], NDArray[np.int32]]:
    """Cluster (N, 32) uint8 descriptors into at most ``k`` non-empty clusters.

    Returns centres (C, 32) uint8 with C <= k and labels (N,) int32 in [0, C).
    With N <= k every distinct descriptor is its own cluster.
    """
    desc = np.ascontiguousarray(desc, dtype=np.uint8).reshape(-1, DESCRIPTOR_BYTES)
    words = as_words(desc)
    labels = np.full(len(desc), -1, dtype=np.int32)
    if len(desc) <= k:
        centres = np.unique(desc, axis=0)
        _assign(words, as_words(centres), labels)
        return centres, labels
    trials = 2 + int(np.log(k))  # greedy k-means++, as scikit-learn does
    centres = desc[_seed_centres(words, k, rng.random((k, trials)))]
    for _ in range(max_iter):
        if _assign(words, as_words(centres), labels) == 0:
            break
        centres, sizes = _majority(desc, labels, len(centres))
        centres = centres[sizes > 0]
    _assign(words, as_words(centres), labels)
    used, compact = np.unique(labels, return_inverse=True)
    return np.ascontiguousarray(centres[used]), compact.astype(np.int32)


@dataclass(frozen=True)
class TreeArrays:
    """A vocabulary tree in flat arrays (node 0 is the root; its centre is unused).

    ``centres`` (n_nodes, 32) uint8; ``first_child`` and ``n_children`` (n_nodes,)
    int32 (children of node i are ``first_child[i] + range(n_children[i])``, none
    for a leaf); ``node_word`` (n_nodes,) int32, the word id of a leaf, -1 inside.
    """

    centres: NDArray[np.uint8]
    first_child: NDArray[np.int32]
    n_children: NDArray[np.int32]
    node_word: NDArray[np.int32]


def build_tree(desc: NDArray[np.uint8], k: int, depth: int, seed: int = 0) -> TreeArrays:
    """Hierarchical k-majority tree of (N, 32) uint8 descriptors, branching ``k``, ``depth``
    levels below the root. A node with one distinct descriptor stays a leaf early."""
    if k < 2 or depth < 1:
        raise ValueError(f"need k >= 2 and depth >= 1, got k={k}, depth={depth}")
    desc = np.ascontiguousarray(desc, dtype=np.uint8).reshape(-1, DESCRIPTOR_BYTES)
    rng = np.random.default_rng(seed)
    centres: list[NDArray[np.uint8]] = [np.zeros((1, DESCRIPTOR_BYTES), np.uint8)]
    first_child: list[int] = [0]
    n_children: list[int] = [0]
    todo: deque[tuple[int, NDArray[np.int64], int]] = deque([(0, np.arange(len(desc)), 0)])
    while todo:
        node, members, level = todo.popleft()
        if level == depth or len(members) <= 1:
            continue
        node_centres, labels = k_majority(desc[members], k, rng)
        if len(node_centres) <= 1:
            continue
        first = len(first_child)
        first_child[node], n_children[node] = first, len(node_centres)
        centres.append(node_centres)
        first_child.extend([0] * len(node_centres))
        n_children.extend([0] * len(node_centres))
        order = np.argsort(labels, kind="stable")
        bounds = np.searchsorted(labels[order], np.arange(len(node_centres) + 1))
        for c in range(len(node_centres)):
            todo.append((first + c, members[order[bounds[c]:bounds[c + 1]]], level + 1))
    n_children_arr = np.asarray(n_children, dtype=np.int32)
    node_word = np.full(len(n_children_arr), -1, dtype=np.int32)
    leaves = np.flatnonzero(n_children_arr == 0)
    node_word[leaves] = np.arange(len(leaves), dtype=np.int32)
    log.debug("tree: %d nodes, %d leaves", len(n_children_arr), len(leaves))
    return TreeArrays(
        centres=np.ascontiguousarray(np.concatenate(centres), dtype=np.uint8),
        first_child=np.asarray(first_child, dtype=np.int32),
        n_children=n_children_arr,
        node_word=node_word,
    )

"""Synthetic binary descriptors: random 256-bit centres and noisy copies of them."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def random_descriptors(n: int, rng: np.random.Generator) -> NDArray[np.uint8]:
    """(n, 32) uint8 uniformly random descriptors."""
    return rng.integers(0, 256, (n, 32), dtype=np.uint8)


def flip_bits(desc: NDArray[np.uint8], n_bits: int, rng: np.random.Generator) -> NDArray[np.uint8]:
    """Copy of (N, 32) uint8 ``desc`` with ``n_bits`` distinct random bits flipped per row."""
    bits = np.unpackbits(desc, axis=1)
    for row in bits:
        row[rng.choice(256, n_bits, replace=False)] ^= 1
    return np.packbits(bits, axis=1)


def clustered(n_clusters: int, per_cluster: int, n_bits: int, rng: np.random.Generator
              ) -> tuple[NDArray[np.uint8], NDArray[np.uint8], NDArray[np.int64]]:
    """Centres (C, 32), descriptors (C * per_cluster, 32) within ``n_bits`` of their centre,
    and the true cluster label of each descriptor."""
    centres = random_descriptors(n_clusters, rng)
    labels = np.repeat(np.arange(n_clusters), per_cluster)
    return centres, flip_bits(centres[labels], n_bits, rng), labels


def hamming_matrix(a: NDArray[np.uint8], b: NDArray[np.uint8]) -> NDArray[np.int64]:
    """(len(a), len(b)) Hamming distances, by unpacking bits (independent of our kernels)."""
    ba = np.unpackbits(a, axis=1).astype(np.int64)
    bb = np.unpackbits(b, axis=1).astype(np.int64)
    return ba @ (1 - bb).T + (1 - ba) @ bb.T

"""A vocabulary of binary visual words: a k-majority tree over ORB descriptors.

:meth:`Vocabulary.train` clusters the descriptors of a set of training images
(:mod:`slam.place.kmajority`) and weights each leaf word by its inverse document
frequency ``idf = log(N_images / n_images_with_word)``. :meth:`Vocabulary.transform`
turns the descriptors of one image into a TF-IDF :class:`BowVector` (L1-normalised)
and a :class:`FeatureVector` (keypoints grouped by a tree node a few levels above
the leaves, for guided matching). :meth:`Vocabulary.score` is the L1 similarity
``1 - 0.5 |a - b|_1`` in [0, 1].

Files are ``.npz`` archives read with ``allow_pickle=False``: a JSON header
(kind ``slam-orb-vocabulary``, format version, k, depth, descriptor size, a SHA-256
of the arrays) and the tree arrays. Anything else raises :class:`VocabularyError`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit
from numpy.typing import NDArray

from slam.errors import VocabularyError
from slam.features.matching import _hamming, as_words
from slam.place.kmajority import DESCRIPTOR_BYTES, TreeArrays, build_tree

log = logging.getLogger(__name__)

KIND = "slam-orb-vocabulary"
FORMAT_VERSION = 1
_ARRAYS = ("centres", "first_child", "n_children", "node_word", "idf")


@dataclass(frozen=True, eq=False)
class BowVector:
    """Bag of words of one image: ``words`` (M,) int32 sorted unique word ids and their
    TF-IDF ``weights`` (M,) float64, L1-normalised (sum 1; both empty for no words)."""

    words: NDArray[np.int32]
    weights: NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.words)


@dataclass(frozen=True, eq=False)
class FeatureVector:
    """Keypoint indices grouped by tree node: ``nodes`` (P,) int32 sorted unique node ids;
    the keypoints under ``nodes[p]`` are ``indices[offsets[p]:offsets[p + 1]]`` (ascending);
    ``offsets`` (P + 1,) int64, ``indices`` (N,) int32."""

    nodes: NDArray[np.int32]
    offsets: NDArray[np.int64]
    indices: NDArray[np.int32]

    def __len__(self) -> int:
        return len(self.nodes)

    def indices_of(self, node: int) -> NDArray[np.int32]:
        """Keypoint indices under ``node`` (empty when none)."""
        p = int(np.searchsorted(self.nodes, node))
        if p == len(self.nodes) or self.nodes[p] != node:
            return np.empty(0, dtype=np.int32)
        return self.indices[self.offsets[p]:self.offsets[p + 1]]

    def items(self) -> Iterator[tuple[int, NDArray[np.int32]]]:
        """(node id, keypoint indices) pairs in node order."""
        for p, node in enumerate(self.nodes):
            yield int(node), self.indices[self.offsets[p]:self.offsets[p + 1]]

    def as_dict(self) -> dict[int, NDArray[np.int32]]:
        """The mapping node id -> keypoint indices."""
        return dict(self.items())


@njit(cache=True, nogil=True)
def _descend(words, centres, first_child, n_children, node_word, target_depth):  # type: ignore[no-untyped-def]
    """Leaf word (N,) int32 of each descriptor (N, 4) uint64, by greedy descent, and the
    node on its path at ``target_depth`` (N,) int32 (the leaf when it is shallower)."""
    n = words.shape[0]
    out_word = np.empty(n, np.int32)
    out_node = np.empty(n, np.int32)
    for i in range(n):
        node = 0
        level = 0
        at_target = 0
        while n_children[node] > 0:
            best = 257
            best_child = first_child[node]
            for c in range(first_child[node], first_child[node] + n_children[node]):
                d = _hamming(words[i], centres[c])
                if d < best:
                    best = d
                    best_child = c
            node = best_child
            level += 1
            if level == target_depth:
                at_target = node
        if level < target_depth:
            at_target = node
        out_word[i] = node_word[node]
        out_node[i] = at_target
    return out_word, out_node


def _check_descriptors(descriptors: NDArray[np.uint8]) -> NDArray[np.uint8]:
    d = np.asarray(descriptors)
    if d.dtype != np.uint8 or d.ndim != 2 or d.shape[1] != DESCRIPTOR_BYTES:
        raise ValueError(f"descriptors must be (N, {DESCRIPTOR_BYTES}) uint8, got "
                         f"{d.dtype} {d.shape}")
    return np.ascontiguousarray(d)


def _checksum(arrays: dict[str, NDArray[Any]]) -> str:
    h = hashlib.sha256()
    for name in _ARRAYS:
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


class Vocabulary:
    """A k-majority vocabulary tree (see the module docstring) with IDF word weights.

    ``k`` branching, ``depth`` levels below the root; ``n_words`` leaves.
    """

    def __init__(self, tree: TreeArrays, idf: NDArray[np.float64], k: int, depth: int) -> None:
        self.k, self.depth = int(k), int(depth)
        self._tree = tree
        self._centre_words = as_words(tree.centres)
        self.idf = np.ascontiguousarray(idf, dtype=np.float64)
        self.n_nodes = len(tree.n_children)
        self.n_words = int(np.count_nonzero(tree.n_children == 0))
        if len(self.idf) != self.n_words:
            raise ValueError(f"{len(self.idf)} idf weights for {self.n_words} words")

    @property
    def tree(self) -> TreeArrays:
        """The tree arrays (read-only use)."""
        return self._tree

    @classmethod
    def train(cls, descriptors_per_image: Sequence[NDArray[np.uint8]], k: int = 10,
              depth: int = 4, seed: int = 0) -> Vocabulary:
        """Cluster the descriptors of all images ((N_i, 32) uint8 each) into a tree and
        weight its words by IDF over the images. Raises VocabularyError with too few."""
        images = [_check_descriptors(d) for d in descriptors_per_image]
        images = [d for d in images if len(d)]
        total = sum(len(d) for d in images)
        if total < k:
            raise VocabularyError(f"too few descriptors to train a vocabulary: {total} "
                                  f"(from {len(images)} images), need at least k={k}")
        log.info("training a k=%d depth=%d vocabulary on %d descriptors of %d images",
                 k, depth, total, len(images))
        tree = build_tree(np.concatenate(images), k, depth, seed)
        vocab = cls(tree, np.zeros(int(np.count_nonzero(tree.n_children == 0))), k, depth)
        n_images_with = np.zeros(vocab.n_words, dtype=np.int64)
        for d in images:
            n_images_with[np.unique(vocab.words_of(d)[0])] += 1
        # A word no training image reaches by descent is as rare as can be: log(N).
        vocab.idf = np.log(len(images) / np.maximum(n_images_with, 1))
        log.info("vocabulary: %d nodes, %d words", vocab.n_nodes, vocab.n_words)
        return vocab

    def words_of(self, descriptors: NDArray[np.uint8], levels_up: int = 2
                 ) -> tuple[NDArray[np.int32], NDArray[np.int32]]:
        """Word id (N,) int32 of each (N, 32) uint8 descriptor and its node ``levels_up``
        levels above the leaves (N,) int32 (at depth ``max(depth - levels_up, 0)``)."""
        d = _check_descriptors(descriptors)
        t = self._tree
        word, node = _descend(as_words(d), self._centre_words, t.first_child, t.n_children,
                              t.node_word, max(self.depth - levels_up, 0))
        return word, node

    def transform(self, descriptors: NDArray[np.uint8], levels_up: int = 2
                  ) -> tuple[BowVector, FeatureVector]:
        """TF-IDF bag of words and feature vector of one image's (N, 32) uint8 descriptors.

        A word's weight is (its count) x (its IDF), then L1-normalised; words of zero
        weight (seen in every training image) are left out.
        """
        word, node = self.words_of(descriptors, levels_up)
        uniq, inverse = np.unique(word, return_inverse=True)
        acc = np.bincount(inverse, weights=self.idf[word], minlength=len(uniq))
        keep = acc > 0
        total = float(acc[keep].sum())
        weights = np.asarray(acc[keep], dtype=np.float64)
        bow = BowVector(uniq[keep].astype(np.int32), weights / total if total > 0 else weights)
        order = np.argsort(node, kind="stable")
        nodes, starts = np.unique(node[order], return_index=True)
        fvec = FeatureVector(nodes.astype(np.int32),
                             np.append(starts, len(order)).astype(np.int64),
                             order.astype(np.int32))
        return bow, fvec

    @staticmethod
    def score(a: BowVector, b: BowVector) -> float:
        """L1 score ``1 - 0.5 * |a - b|_1`` in [0, 1] of two L1-normalised vectors
        (= sum over common words of the smaller weight)."""
        _, ia, ib = np.intersect1d(a.words, b.words, assume_unique=True, return_indices=True)
        s = float(np.minimum(a.weights[ia], b.weights[ib]).sum())
        return min(max(s, 0.0), 1.0)

    def save(self, path: str | Path, metadata: dict[str, Any] | None = None) -> None:
        """Write the vocabulary to ``path`` (npz, see the module docstring), atomically."""
        path = Path(path)
        arrays = {**self._tree.__dict__, "idf": self.idf}
        header = {"kind": KIND, "version": FORMAT_VERSION, "k": self.k, "depth": self.depth,
                  "descriptor_bytes": DESCRIPTOR_BYTES, "n_nodes": self.n_nodes,
                  "n_words": self.n_words, "checksum": _checksum(arrays),
                  "metadata": metadata or {}}
        raw = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, header=raw, **arrays)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        log.info("wrote vocabulary %s (%d words)", path, self.n_words)

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Read a file written by :meth:`save`. Raises VocabularyError when it is missing,
        truncated, corrupt, of another kind or version, or fails its checksum."""
        header, arrays = _read_archive(Path(path))
        tree = TreeArrays(**{name: arrays[name] for name in _ARRAYS[:-1]})
        _check_tree(Path(path), tree, arrays["idf"], header)
        return cls(tree, arrays["idf"], int(header["k"]), int(header["depth"]))

    @staticmethod
    def read_header(path: str | Path) -> dict[str, Any]:
        """The JSON header of a vocabulary file (checked like :meth:`load`)."""
        return _read_archive(Path(path))[0]


_DTYPES = {"centres": np.uint8, "first_child": np.int32, "n_children": np.int32,
           "node_word": np.int32, "idf": np.float64}


def _parse_header(raw: object, path: Path) -> dict[str, Any]:
    """The JSON header of an archive; VocabularyError unless it names our kind."""
    if not isinstance(raw, np.ndarray) or raw.dtype != np.uint8:
        raise VocabularyError(f"{path} is not a vocabulary file (bad header)")
    header = json.loads(raw.tobytes().decode())  # ValueError when not JSON text
    kind = header.get("kind") if isinstance(header, dict) else None
    if kind != KIND:
        raise VocabularyError(f"{path} is a {kind!r} file, not a {KIND}")
    return dict(header)


def _read_archive(path: Path) -> tuple[dict[str, Any], dict[str, NDArray[Any]]]:
    if not path.is_file():
        raise VocabularyError(f"vocabulary file not found: {path}")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise VocabularyError(f"{path} is not a vocabulary file (not an npz archive)")
        with archive:
            if "header" not in archive.files:
                raise VocabularyError(f"{path} is not a vocabulary file (no header)")
            header = _parse_header(archive["header"], path)
            arrays = {name: archive[name] for name in _ARRAYS}
    except VocabularyError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise VocabularyError(f"{path}: unreadable vocabulary file (truncated or corrupt?): "
                              f"{exc}") from exc
    if header.get("version") != FORMAT_VERSION:
        raise VocabularyError(f"{path}: vocabulary format version {header.get('version')!r}, "
                              f"this program reads version {FORMAT_VERSION}")
    if header.get("descriptor_bytes") != DESCRIPTOR_BYTES:
        raise VocabularyError(f"{path}: descriptors of {header.get('descriptor_bytes')} bytes, "
                              f"expected {DESCRIPTOR_BYTES} (ORB)")
    for name, dtype in _DTYPES.items():
        if not isinstance(arrays[name], np.ndarray) or arrays[name].dtype != dtype:
            raise VocabularyError(f"{path}: array {name} is not {np.dtype(dtype)}")
    if _checksum(arrays) != header.get("checksum"):
        raise VocabularyError(f"{path}: checksum mismatch (corrupt vocabulary file)")
    return header, arrays


def _check_tree(path: Path, tree: TreeArrays, idf: NDArray[np.float64],
                header: dict[str, Any]) -> None:
    """Structural checks, so that a well-formed but inconsistent file cannot crash a kernel."""
    n = len(tree.n_children)
    ok = (tree.centres.shape == (n, DESCRIPTOR_BYTES) and tree.first_child.shape == (n,)
          and tree.node_word.shape == (n,) and n == header.get("n_nodes")
          and np.all(tree.n_children >= 0)
          and np.all(tree.first_child + tree.n_children <= n)
          and np.all(tree.first_child[tree.n_children > 0] > np.flatnonzero(tree.n_children > 0))
          and np.array_equal(tree.node_word >= 0, tree.n_children == 0)
          and idf.shape == (int(np.count_nonzero(tree.n_children == 0)),)
          and len(idf) == header.get("n_words")
          and np.array_equal(np.sort(tree.node_word[tree.node_word >= 0]), np.arange(len(idf))))
    if not ok:
        raise VocabularyError(f"{path}: inconsistent vocabulary tree")

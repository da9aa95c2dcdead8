"""The place-recognition interface the rest of the system uses.

Loop closing and relocalisation talk to a :class:`PlaceRecognizer` only: describe an
image, add/erase keyframes, query for candidates, compare two descriptions. The
bag-of-binary-words implementation is :class:`BowPlaceRecognizer`; a learned global
embedding can be swapped in through ``place.method``
(:func:`slam.place.factory.make_place_recognizer`).
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from slam.data import VOCAB_DIR, data_file
from slam.place.database import KeyframeDatabase
from slam.place.vocabulary import BowVector, FeatureVector, Vocabulary

log = logging.getLogger(__name__)

DEFAULT_VOCABULARY_NAME = "orb_k10_L4.npz"


class PlaceDescriptor:
    """What a recognizer makes of one image; opaque to callers."""


class PlaceRecognizer(ABC):
    """Describe images, index keyframes by their descriptions, query for similar ones.

    Scores are in [0, 1], higher is more similar; implementations are thread-safe.
    """

    max_candidates: int = 10

    @abstractmethod
    def describe(self, descriptors: NDArray[np.uint8],
                 image: NDArray[np.uint8] | None = None) -> PlaceDescriptor:
        """Description of one image from its (N, 32) uint8 ORB descriptors (and the
        (H, W) uint8 image, for methods that need it)."""

    @abstractmethod
    def add(self, kf_id: int, desc: PlaceDescriptor) -> None:
        """Index keyframe ``kf_id`` (replacing an earlier description of it)."""

    @abstractmethod
    def erase(self, kf_id: int) -> None:
        """Forget keyframe ``kf_id`` (no-op when unknown)."""

    @abstractmethod
    def clear(self) -> None:
        """Forget every keyframe."""

    @abstractmethod
    def query(self, desc: PlaceDescriptor, max_results: int | None = None,
              exclude: Collection[int] = ()) -> list[tuple[int, float]]:
        """Up to ``max_results`` (default :attr:`max_candidates`) (keyframe id, score)
        pairs, best first, leaving out the ids in ``exclude``."""

    @abstractmethod
    def similarity(self, a: PlaceDescriptor, b: PlaceDescriptor) -> float:
        """Score in [0, 1] of two descriptions."""

    @abstractmethod
    def __len__(self) -> int:
        """Number of indexed keyframes."""

    @abstractmethod
    def __contains__(self, kf_id: object) -> bool:
        """Whether keyframe ``kf_id`` is indexed."""


@dataclass(frozen=True, eq=False)
class BowPlaceDescriptor(PlaceDescriptor):
    """Bag of words and feature vector (keypoints grouped by tree node) of one image."""

    bow: BowVector
    features: FeatureVector


def _bow_of(desc: PlaceDescriptor) -> BowVector:
    if not isinstance(desc, BowPlaceDescriptor):
        raise TypeError(f"expected a BowPlaceDescriptor, got {type(desc).__name__}")
    return desc.bow


class BowPlaceRecognizer(PlaceRecognizer):
    """Bag of binary words over ``vocabulary`` with an inverted-index keyframe database.

    ``levels_up``: the feature vector groups keypoints by their node that many levels
    above the leaves.
    """

    def __init__(self, vocabulary: Vocabulary, levels_up: int = 2,
                 max_candidates: int = 10) -> None:
        self.vocabulary = vocabulary
        self.levels_up = levels_up
        self.max_candidates = max_candidates
        self.database = KeyframeDatabase(vocabulary.n_words)

    def describe(self, descriptors: NDArray[np.uint8],
                 image: NDArray[np.uint8] | None = None) -> BowPlaceDescriptor:
        bow, features = self.vocabulary.transform(descriptors, self.levels_up)
        return BowPlaceDescriptor(bow, features)

    def add(self, kf_id: int, desc: PlaceDescriptor) -> None:
        self.database.add(kf_id, _bow_of(desc))

    def erase(self, kf_id: int) -> None:
        self.database.erase(kf_id)

    def clear(self) -> None:
        self.database.clear()

    def query(self, desc: PlaceDescriptor, max_results: int | None = None,
              exclude: Collection[int] = ()) -> list[tuple[int, float]]:
        n = self.max_candidates if max_results is None else max_results
        return self.database.query(_bow_of(desc), n, exclude)

    def similarity(self, a: PlaceDescriptor, b: PlaceDescriptor) -> float:
        return Vocabulary.score(_bow_of(a), _bow_of(b))

    def __len__(self) -> int:
        return len(self.database)

    def __contains__(self, kf_id: object) -> bool:
        return kf_id in self.database


def default_vocabulary_path() -> Path:
    """The vocabulary shipped in the package (``slam/data/vocab/``)."""
    return data_file(VOCAB_DIR, DEFAULT_VOCABULARY_NAME)


_cache: dict[tuple[Path, int, int], Vocabulary] = {}
_cache_lock = threading.Lock()


def load_vocabulary(path: str | Path | None = None) -> Vocabulary:
    """The vocabulary at ``path`` (None or "": the shipped one), read once per process
    (re-read when the file changes). Raises VocabularyError."""
    p = Path(path) if path else default_vocabulary_path()
    p = p.resolve()
    try:
        st = p.stat()
        key = (p, st.st_mtime_ns, st.st_size)
    except OSError:
        return Vocabulary.load(p)  # raises VocabularyError: not found
    with _cache_lock:
        vocab = _cache.get(key)
        if vocab is None:
            vocab = Vocabulary.load(p)
            for old in [k for k in _cache if k[0] == p]:
                del _cache[old]
            _cache[key] = vocab
            log.info("loaded vocabulary %s: k=%d depth=%d, %d words", p, vocab.k,
                     vocab.depth, vocab.n_words)
        return vocab


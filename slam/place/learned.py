"""Place recognition by our learned global image embedding, through cv2.dnn (no torch).

Each keyframe image becomes one unit 256-D vector (:class:`EmbeddingDescriptor`); the
database is a matrix of them and a query is one matrix-vector product. Scores are the
cosine similarity clipped to [0, 1].

The embedding needs the image: callers pass it to :meth:`describe` (``image=``). Without
one the description is empty (it matches nothing), with a warning once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from slam.errors import ConfigError, ImageError
from slam.features.learned import DnnRunner, read_model
from slam.features.patches import standardize
from slam.place.embedding_input import EMBED_SIZE, embed_image
from slam.place.recognizer import PlaceDescriptor, PlaceRecognizer

log = logging.getLogger(__name__)

DEFAULT_EMBEDDING_MODEL = "embedding.onnx"


@dataclass(frozen=True, eq=False)
class EmbeddingDescriptor(PlaceDescriptor):
    """Unit vector (D,) float32 of one image; all zeros when there was no image."""

    vector: NDArray[np.float32]


def _vector_of(desc: PlaceDescriptor) -> NDArray[np.float32]:
    if not isinstance(desc, EmbeddingDescriptor):
        raise TypeError(f"expected an EmbeddingDescriptor, got {type(desc).__name__}")
    return desc.vector


class LearnedPlaceRecognizer(PlaceRecognizer):
    """Global-embedding recognizer over the ONNX model at ``model_path`` (None or "":
    the shipped ``slam/data/models/embedding.onnx``)."""

    def __init__(self, model_path: str | Path | None = None, max_candidates: int = 10) -> None:
        onnx, meta, self.path = read_model(model_path, DEFAULT_EMBEDDING_MODEL)
        if meta.get("kind", "embedding") != "embedding":
            raise ConfigError(f"{self.path} is not an embedding model ({meta.get('kind')})")
        if (int(meta.get("width", EMBED_SIZE[0])), int(meta.get("height", EMBED_SIZE[1]))) \
                != EMBED_SIZE:
            raise ConfigError(f"{self.path}: input size differs from {EMBED_SIZE}")
        self.dim = int(meta.get("dim", 256))
        self.eps = float(meta.get("standardize_eps", 1.0))
        self.max_candidates = max_candidates
        self.runner = DnnRunner(onnx, str(self.path))
        self._lock = threading.Lock()
        self._vectors: dict[int, NDArray[np.float32]] = {}
        self._matrix: tuple[NDArray[np.int64], NDArray[np.float32]] | None = None
        self._warned = False
        log.info("learned place embedding %s", self.path)

    def embed(self, image: NDArray[np.uint8]) -> NDArray[np.float32]:
        """Unit embedding (D,) of a grey (H, W) or BGR (H, W, 3) uint8 image."""
        if image is None or image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ImageError("the place embedding needs a uint8 grey or BGR image")
        small = embed_image(image)[None, None]
        out = self.runner.forward(standardize(small, self.eps))[0]
        norm = float(np.linalg.norm(out))
        return (out / norm if norm > 0 else out).astype(np.float32)

    def describe(self, descriptors: NDArray[np.uint8],
                 image: NDArray[np.uint8] | None = None) -> EmbeddingDescriptor:
        if image is None:
            if not self._warned:
                log.warning("learned place recognition got no image: keyframes are not "
                            "described (pass image= to describe)")
                self._warned = True
            return EmbeddingDescriptor(np.zeros(self.dim, np.float32))
        return EmbeddingDescriptor(self.embed(image))

    def add(self, kf_id: int, desc: PlaceDescriptor) -> None:
        vec = _vector_of(desc)
        with self._lock:
            self._vectors[kf_id] = vec
            self._matrix = None

    def erase(self, kf_id: int) -> None:
        with self._lock:
            if self._vectors.pop(kf_id, None) is not None:
                self._matrix = None

    def clear(self) -> None:
        with self._lock:
            self._vectors.clear()
            self._matrix = None

    def _stacked(self) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        if self._matrix is None:
            ids = np.fromiter(self._vectors.keys(), np.int64, len(self._vectors))
            mat = (np.stack(list(self._vectors.values())) if self._vectors
                   else np.zeros((0, self.dim), np.float32))
            self._matrix = (ids, mat)
        return self._matrix

    def query(self, desc: PlaceDescriptor, max_results: int | None = None,
              exclude: Collection[int] = ()) -> list[tuple[int, float]]:
        vec = _vector_of(desc)
        n = self.max_candidates if max_results is None else max_results
        if not np.any(vec):
            return []
        with self._lock:
            ids, mat = self._stacked()
        if len(ids) == 0:
            return []
        scores = np.clip(mat @ vec, 0.0, 1.0)
        skip = set(exclude)
        out: list[tuple[int, float]] = []
        for i in np.argsort(-scores, kind="stable"):
            kf = int(ids[i])
            if kf in skip or scores[i] <= 0.0:
                continue
            out.append((kf, float(scores[i])))
            if len(out) >= n:
                break
        return out

    def similarity(self, a: PlaceDescriptor, b: PlaceDescriptor) -> float:
        return float(np.clip(_vector_of(a) @ _vector_of(b), 0.0, 1.0))

    def __len__(self) -> int:
        with self._lock:
            return len(self._vectors)

    def __contains__(self, kf_id: object) -> bool:
        with self._lock:
            return kf_id in self._vectors

"""The place-recognition interface: BoW recognizer, factory, shipped vocabulary, caching."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from slam.config import PlaceConfig
from slam.errors import ConfigError, VocabularyError
from slam.place.factory import make_place_recognizer
from slam.place.recognizer import (
    BowPlaceDescriptor,
    BowPlaceRecognizer,
    PlaceDescriptor,
    PlaceRecognizer,
    default_vocabulary_path,
    load_vocabulary,
)
from slam.place.vocabulary import Vocabulary
from tests.place.synthetic_descriptors import flip_bits, random_descriptors


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [random_descriptors(200, rng) for _ in range(12)]


@pytest.fixture(scope="module")
def vocab(images: list[np.ndarray]) -> Vocabulary:
    return Vocabulary.train(images, k=6, depth=3)


def test_bow_recognizer_describes_indexes_and_queries(
    vocab: Vocabulary, images: list[np.ndarray]
) -> None:
    rec = BowPlaceRecognizer(vocab, max_candidates=3)
    assert isinstance(rec, PlaceRecognizer)
    descs = [rec.describe(d) for d in images]
    for i, d in enumerate(descs):
        rec.add(i, d)
    assert len(rec) == 12
    query = rec.describe(flip_bits(images[5], 6, np.random.default_rng(1)))
    result = rec.query(query)
    assert len(result) == 3 and result[0][0] == 5
    assert result[0][1] == pytest.approx(rec.similarity(query, descs[5]))
    assert rec.similarity(descs[2], descs[2]) == pytest.approx(1.0)
    assert rec.query(query, 1, exclude=[5])[0][0] != 5
    bow, fvec = vocab.transform(images[5])
    assert isinstance(descs[5], BowPlaceDescriptor)
    np.testing.assert_array_equal(descs[5].bow.words, bow.words)
    np.testing.assert_array_equal(descs[5].features.nodes, fvec.nodes)
    rec.erase(5)
    assert 5 not in [kf for kf, _ in rec.query(query, 12)]
    rec.clear()
    assert len(rec) == 0


def test_foreign_descriptors_are_rejected(vocab: Vocabulary) -> None:
    rec = BowPlaceRecognizer(vocab)
    with pytest.raises(TypeError):
        rec.add(0, PlaceDescriptor())


def test_factory_gives_the_bow_recognizer_or_explains(tmp_path: Path) -> None:
    rec = make_place_recognizer(PlaceConfig.model_validate({"max_candidates": 4}))
    assert isinstance(rec, BowPlaceRecognizer) and rec.max_candidates == 4
    with pytest.raises(ConfigError, match="learned model not found"):
        make_place_recognizer(PlaceConfig.model_validate(
            {"method": "learned", "embedding_model": str(tmp_path / "missing.onnx")}))
    with pytest.raises(VocabularyError, match="not found"):
        missing = str(tmp_path / "missing.npz")
        make_place_recognizer(PlaceConfig.model_validate({"vocabulary": missing}))


def test_shipped_vocabulary_has_the_documented_shape() -> None:
    path = default_vocabulary_path()
    assert path.is_file() and path.stat().st_size <= 2 * 1024 * 1024
    vocab = Vocabulary.load(path)
    readme = (path.parent / "README.md").read_text()
    assert path.name in readme
    k, depth = (int(x) for x in re.search(r"--k (\d+) --depth (\d+)", readme).groups())  # type: ignore[union-attr]
    assert (vocab.k, vocab.depth) == (k, depth) == (10, 4)
    assert 0.9 * 10**4 <= vocab.n_words <= 10**4


def test_vocabulary_is_loaded_once_and_again_when_the_file_changes(
    tmp_path: Path, vocab: Vocabulary
) -> None:
    path = tmp_path / "v.npz"
    vocab.save(path)
    first = load_vocabulary(path)
    assert load_vocabulary(str(path)) is first
    shipped = load_vocabulary(default_vocabulary_path())
    assert load_vocabulary("") is load_vocabulary(None) is shipped
    vocab.save(path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert load_vocabulary(path) is not first

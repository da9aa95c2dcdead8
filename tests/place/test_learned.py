"""Place recognition by the learned embedding (cv2.dnn, shipped model; no torch)."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from slam.config import PlaceConfig
from slam.errors import ConfigError, ImageError
from slam.place.factory import make_place_recognizer
from slam.place.learned import EmbeddingDescriptor, LearnedPlaceRecognizer
from slam.place.recognizer import BowPlaceDescriptor


@pytest.fixture(scope="module")
def rec() -> LearnedPlaceRecognizer:
    return LearnedPlaceRecognizer()


def _room(seed: int, h: int = 240, w: int = 320) -> np.ndarray:
    """A synthetic view: shapes of random grey levels on a gradient."""
    rng = np.random.default_rng(seed)
    img = np.tile(np.linspace(40, 200, w, dtype=np.float32), (h, 1)).astype(np.uint8)
    for _ in range(25):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        cv2.rectangle(img, (x, y), (x + int(rng.integers(10, 80)), y + int(rng.integers(10, 80))),
                      int(rng.integers(0, 256)), -1)
    return img


def _vec(*values: float) -> EmbeddingDescriptor:
    v = np.zeros(256, np.float32)
    v[: len(values)] = values
    return EmbeddingDescriptor(v / np.linalg.norm(v))


def test_database_add_query_erase_clear(rec: LearnedPlaceRecognizer) -> None:
    r = LearnedPlaceRecognizer(rec.path, max_candidates=2)
    r.add(1, _vec(1, 0))
    r.add(2, _vec(1, 1))
    r.add(3, _vec(0, 1))
    r.add(4, _vec(-1, 0))
    got = r.query(_vec(1, 0.1))
    assert [k for k, _ in got] == [1, 2]
    assert got[0][1] == pytest.approx(1 / np.sqrt(1.01), abs=1e-6)
    assert [k for k, _ in r.query(_vec(1, 0.1), 5, exclude=[1])] == [2, 3]  # 4: score 0
    r.add(2, _vec(0, 1))  # replaces keyframe 2's description
    assert r.query(_vec(1, 1), 1)[0][1] == pytest.approx(np.sqrt(0.5), abs=1e-6)
    r.erase(1)
    r.erase(99)
    assert len(r) == 3 and [k for k, _ in r.query(_vec(0, 1), 5)] == [2, 3]
    assert r.query(_vec(1, 0), 5) == []  # nothing with a positive score
    assert r.similarity(_vec(1, 0), _vec(0, 1)) == 0.0
    r.clear()
    assert len(r) == 0 and r.query(_vec(1, 0)) == []
    with pytest.raises(TypeError):
        r.add(5, BowPlaceDescriptor(None, None))  # type: ignore[arg-type]


def test_embedding_is_a_unit_vector_of_grey_or_colour(rec: LearnedPlaceRecognizer) -> None:
    img = _room(0)
    e = rec.embed(img)
    assert e.shape == (256,) and e.dtype == np.float32
    assert np.linalg.norm(e) == pytest.approx(1.0, abs=1e-5)
    bgr = np.asarray(cv2.cvtColor(img, cv2.COLOR_GRAY2BGR), np.uint8)
    np.testing.assert_allclose(rec.embed(bgr), e, atol=1e-5)
    with pytest.raises(ImageError):
        rec.embed(img.astype(np.float32))  # type: ignore[arg-type]


def test_the_same_place_scores_higher_than_another(rec: LearnedPlaceRecognizer) -> None:
    r = LearnedPlaceRecognizer(rec.path, max_candidates=10)
    rooms = [_room(s) for s in range(6)]
    for k, img in enumerate(rooms):
        r.add(k, r.describe(np.zeros((0, 32), np.uint8), img))
    rng = np.random.default_rng(9)
    hits = 0
    for k, img in enumerate(rooms):
        moved = np.roll(img, 2, axis=1).astype(np.float32) * 0.9 + 12
        noisy = np.clip(moved + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
        best = r.query(r.describe(np.zeros((0, 32), np.uint8), noisy), 1)
        hits += int(best[0][0] == k)
    assert hits >= 5


def test_no_image_gives_an_empty_description(rec: LearnedPlaceRecognizer,
                                             caplog: pytest.LogCaptureFixture) -> None:
    r = LearnedPlaceRecognizer(rec.path)
    r.add(0, r.describe(np.zeros((0, 32), np.uint8), _room(1)))
    with caplog.at_level(logging.WARNING, logger="slam.place.learned"):
        d = r.describe(np.zeros((0, 32), np.uint8))
        r.describe(np.zeros((0, 32), np.uint8))
    assert not np.any(d.vector) and r.query(d) == []
    assert sum("no image" in m for m in caplog.messages) == 1


def test_factory_returns_the_learned_recognizer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    r = make_place_recognizer(PlaceConfig.model_validate({"method": "learned",
                                                         "max_candidates": 3}))
    assert isinstance(r, LearnedPlaceRecognizer) and r.max_candidates == 3
    with pytest.raises(ConfigError, match="not found"):
        make_place_recognizer(PlaceConfig.model_validate(
            {"method": "learned", "embedding_model": str(tmp_path / "x.onnx")}))

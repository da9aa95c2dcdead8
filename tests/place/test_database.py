"""Keyframe database: ranking against brute-force scores, erase, exclude, merges, threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import slam.place.database as database_module
from slam.place.database import KeyframeDatabase
from slam.place.vocabulary import BowVector, Vocabulary
from tests.place.synthetic_descriptors import flip_bits, random_descriptors

N_IMAGES = 40


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    """40 synthetic images of 300 random descriptors each."""
    rng = np.random.default_rng(0)
    return [random_descriptors(300, rng) for _ in range(N_IMAGES)]


@pytest.fixture(scope="module")
def vocab(images: list[np.ndarray]) -> Vocabulary:
    return Vocabulary.train(images, k=8, depth=3, seed=0)


@pytest.fixture(scope="module")
def bows(vocab: Vocabulary, images: list[np.ndarray]) -> list[BowVector]:
    return [vocab.transform(d)[0] for d in images]


def _noisy_copy(desc: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    keep = rng.random(len(desc)) < 0.7
    return flip_bits(desc[keep], 8, rng)


def _brute_force(bows: dict[int, BowVector], query: BowVector) -> list[tuple[int, float]]:
    scored = [(kf, Vocabulary.score(query, b)) for kf, b in bows.items()]
    return sorted([s for s in scored if s[1] > 0], key=lambda s: -s[1])


def test_noisy_copy_finds_its_image_first(
    vocab: Vocabulary, images: list[np.ndarray], bows: list[BowVector]
) -> None:
    db = KeyframeDatabase(vocab.n_words)
    for i, bow in enumerate(bows):
        db.add(100 + i, bow)
    assert len(db) == N_IMAGES
    rng = np.random.default_rng(1)
    for i in (0, 7, 39):
        query, _ = vocab.transform(_noisy_copy(images[i], rng))
        result = db.query(query, 5)
        assert result[0][0] == 100 + i
        assert result[0][1] > 1.3 * result[1][1]
        assert [s for _, s in result] == sorted((s for _, s in result), reverse=True)


def test_scores_and_order_equal_brute_force(vocab: Vocabulary, bows: list[BowVector]) -> None:
    db = KeyframeDatabase(vocab.n_words)
    stored = {i: bows[i] for i in range(N_IMAGES)}
    for kf, bow in stored.items():
        db.add(kf, bow)
    result = db.query(bows[3], N_IMAGES)
    expected = _brute_force(stored, bows[3])
    assert [kf for kf, _ in result] == [kf for kf, _ in expected]
    np.testing.assert_allclose([s for _, s in result], [s for _, s in expected])


def test_erase_exclude_min_score_and_replace(vocab: Vocabulary, bows: list[BowVector]) -> None:
    db = KeyframeDatabase(vocab.n_words)
    for i in range(10):
        db.add(i, bows[i])
    assert db.query(bows[4], 1)[0][0] == 4
    db.erase(4)
    db.erase(1234)  # unknown: no-op
    assert len(db) == 9 and 4 not in db
    assert 4 not in [kf for kf, _ in db.query(bows[4], 10)]
    assert db.query(bows[5], 1, exclude=[5, 77])[0][0] != 5
    assert all(s >= 0.5 for _, s in db.query(bows[5], 10, min_score=0.5))
    assert db.query(bows[5], 10, min_score=0.5)[0][0] == 5
    db.add(6, bows[5])  # replace keyframe 6's vector
    assert len(db) == 9
    assert {kf for kf, _ in db.query(bows[5], 2)} == {5, 6}
    assert db.query(bows[5], 0) == []
    db.clear()
    assert len(db) == 0 and db.query(bows[5], 5) == []


def test_merges_and_compaction_keep_results_exact(
    monkeypatch: pytest.MonkeyPatch, vocab: Vocabulary, bows: list[BowVector]
) -> None:
    monkeypatch.setattr(database_module, "_BUFFER_ENTRIES", 700)  # a merge every few adds
    monkeypatch.setattr(database_module, "_COMPACT_MIN_DEAD", 500)
    db = KeyframeDatabase(vocab.n_words)
    rng = np.random.default_rng(2)
    stored: dict[int, BowVector] = {}
    for step in range(200):
        kf = int(rng.integers(0, 60))
        if rng.random() < 0.3:
            db.erase(kf)
            stored.pop(kf, None)
        else:
            db.add(kf, bows[step % N_IMAGES])
            stored[kf] = bows[step % N_IMAGES]
        if step % 20 == 0:
            q = bows[int(rng.integers(0, N_IMAGES))]
            got = db.query(q, 100)
            expected = _brute_force(stored, q)
            assert {kf for kf, _ in got} == {kf for kf, _ in expected}
            np.testing.assert_allclose(sorted(s for _, s in got), sorted(s for _, s in expected))
    assert len(db) == len(stored)


def test_word_ids_out_of_range_are_rejected(vocab: Vocabulary) -> None:
    db = KeyframeDatabase(vocab.n_words)
    with pytest.raises(ValueError):
        db.add(0, BowVector(np.array([vocab.n_words], np.int32), np.array([1.0])))


def test_concurrent_adds_and_queries(vocab: Vocabulary, bows: list[BowVector]) -> None:
    db = KeyframeDatabase(vocab.n_words)
    errors: list[BaseException] = []

    def adder() -> None:
        try:
            for kf in range(400):
                db.add(kf, bows[kf % N_IMAGES])
                if kf % 3 == 0:
                    db.erase(kf - 1)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=adder)
    thread.start()
    while thread.is_alive():
        for kf, score in db.query(bows[0], 5):
            assert 0.0 < score <= 1.0 + 1e-9 and 0 <= kf < 400
    thread.join()
    assert not errors
    assert len(db) == 400 - 133
    assert db.query(bows[0], 1)[0][1] == pytest.approx(1.0)

"""Vocabulary: tree descent, TF-IDF bag of words, feature vector, score, IDF, file format."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from slam.errors import VocabularyError
from slam.place.vocabulary import KIND, BowVector, Vocabulary
from tests.place.synthetic_descriptors import (
    clustered,
    flip_bits,
    hamming_matrix,
    random_descriptors,
)


@pytest.fixture(scope="module")
def clustered_vocab() -> tuple[Vocabulary, np.ndarray]:
    """A k=5, depth=3 vocabulary over 100 clusters of 20 descriptors (20 bits of noise)."""
    rng = np.random.default_rng(0)
    _, desc, _ = clustered(100, 20, 20, rng)
    images = np.split(desc[rng.permutation(len(desc))], 20)
    return Vocabulary.train(images, k=5, depth=3, seed=0), desc


def test_descent_reaches_the_nearest_leaf_for_most_training_descriptors(
    clustered_vocab: tuple[Vocabulary, np.ndarray],
) -> None:
    vocab, desc = clustered_vocab
    tree = vocab.tree
    leaves = np.flatnonzero(tree.n_children == 0)  # word w is leaves[w]
    d = hamming_matrix(desc, tree.centres[leaves])
    words, _ = vocab.words_of(desc)
    assert np.mean(d[np.arange(len(desc)), words] == d.min(axis=1)) >= 0.95


def test_descent_takes_the_nearest_child_at_every_level(
    clustered_vocab: tuple[Vocabulary, np.ndarray],
) -> None:
    vocab, desc = clustered_vocab
    tree = vocab.tree
    parent = np.zeros(vocab.n_nodes, dtype=int)
    for node in range(vocab.n_nodes):
        parent[tree.first_child[node] + np.arange(tree.n_children[node])] = node
    words, _ = vocab.words_of(desc[:200])
    leaf_of_word = np.flatnonzero(tree.n_children == 0)
    for i, w in enumerate(words):
        node = int(leaf_of_word[w])
        while node != 0:
            p = parent[node]
            kids = tree.first_child[p] + np.arange(tree.n_children[p])
            dist = hamming_matrix(desc[i:i + 1], tree.centres[kids])[0]
            assert node == kids[np.argmin(dist)]  # first of equals, as the kernel
            node = p


def test_bow_is_count_times_idf_l1_normalised(
    clustered_vocab: tuple[Vocabulary, np.ndarray],
) -> None:
    vocab, desc = clustered_vocab
    sample = desc[::7]
    bow, _ = vocab.transform(sample)
    words, _ = vocab.words_of(sample)
    counts = np.bincount(words, weights=vocab.idf[words], minlength=vocab.n_words)
    dense = counts / counts.sum()
    assert np.all(np.diff(bow.words) > 0) and bow.words.dtype == np.int32
    np.testing.assert_allclose(bow.weights.sum(), 1.0)
    np.testing.assert_array_equal(bow.words, np.flatnonzero(dense))
    np.testing.assert_allclose(bow.weights, dense[bow.words])


def test_feature_vector_groups_keypoints_under_their_ancestor(
    clustered_vocab: tuple[Vocabulary, np.ndarray],
) -> None:
    vocab, desc = clustered_vocab
    sample = desc[:300]
    _, fvec = vocab.transform(sample, levels_up=1)
    _, nodes = vocab.words_of(sample, levels_up=1)
    assert np.all(np.diff(fvec.nodes) > 0)
    np.testing.assert_array_equal(np.sort(fvec.indices), np.arange(300))
    for node, idx in fvec.items():
        np.testing.assert_array_equal(np.flatnonzero(nodes == node), idx)
    some = int(fvec.nodes[0])
    np.testing.assert_array_equal(fvec.indices_of(some), fvec.as_dict()[some])
    assert len(fvec.indices_of(-5)) == 0
    # levels_up=1 in a depth-3 tree: the nodes are at depth 2, i.e. grandchildren of the root
    depth2 = {int(c2) for c1 in range(1, 1 + vocab.tree.n_children[0])
              for c2 in vocab.tree.first_child[c1] + np.arange(vocab.tree.n_children[c1])}
    assert set(fvec.nodes.tolist()) <= depth2 | set(np.flatnonzero(vocab.tree.n_children == 0))


def test_score_is_one_minus_half_l1_distance(
    clustered_vocab: tuple[Vocabulary, np.ndarray],
) -> None:
    vocab, desc = clustered_vocab
    a, _ = vocab.transform(desc[:200])
    b, _ = vocab.transform(desc[150:400])
    dense_a = np.zeros(vocab.n_words)
    dense_b = np.zeros(vocab.n_words)
    dense_a[a.words], dense_b[b.words] = a.weights, b.weights
    expected = 1.0 - 0.5 * np.abs(dense_a - dense_b).sum()
    assert 0.0 < expected < 1.0
    assert Vocabulary.score(a, b) == pytest.approx(expected)
    assert Vocabulary.score(b, a) == pytest.approx(expected)
    assert Vocabulary.score(a, a) == pytest.approx(1.0)
    disjoint = BowVector(np.array([0, 1], np.int32), np.array([0.5, 0.5]))
    other = BowVector(np.array([2, 5], np.int32), np.array([0.25, 0.75]))
    assert Vocabulary.score(disjoint, other) == 0.0


def test_idf_is_log_of_images_over_images_with_the_word() -> None:
    rng = np.random.default_rng(1)
    centres, _, _ = clustered(4, 1, 0, rng)
    # image i holds noisy copies of centres 0..i, so centre c is in images c..3
    images = [flip_bits(np.repeat(centres[: i + 1], 10, axis=0), 4, rng) for i in range(4)]
    vocab = Vocabulary.train(images, k=4, depth=1)
    assert vocab.n_words == 4
    words, _ = vocab.words_of(centres)
    assert len(set(words.tolist())) == 4
    n_images_with = np.array([4, 3, 2, 1])  # centre c is in images c..3
    np.testing.assert_allclose(vocab.idf[words], np.log(4 / n_images_with))
    bow, _ = vocab.transform(centres)
    assert words[0] not in bow.words  # idf 0: in every image, weight 0, left out


def test_transform_of_nothing_and_bad_input() -> None:
    vocab = Vocabulary.train([random_descriptors(50, np.random.default_rng(2))], k=3, depth=2)
    bow, fvec = vocab.transform(np.empty((0, 32), np.uint8))
    assert len(bow) == 0 and len(fvec) == 0
    with pytest.raises(ValueError):
        vocab.transform(np.zeros((5, 31), np.uint8))
    with pytest.raises(ValueError):
        vocab.transform(np.zeros((5, 32), np.int32))
    with pytest.raises(VocabularyError, match="too few"):
        Vocabulary.train([random_descriptors(2, np.random.default_rng(2))], k=3)


# ---------------------------------------------------------------- files


def test_save_load_round_trip(
    tmp_path: Path, clustered_vocab: tuple[Vocabulary, np.ndarray]
) -> None:
    vocab, desc = clustered_vocab
    path = tmp_path / "v.npz"
    vocab.save(path, {"note": "test"})
    loaded = Vocabulary.load(path)
    assert (loaded.k, loaded.depth, loaded.n_words, loaded.n_nodes) == (
        vocab.k, vocab.depth, vocab.n_words, vocab.n_nodes)
    for name in ("centres", "first_child", "n_children", "node_word"):
        np.testing.assert_array_equal(getattr(loaded.tree, name), getattr(vocab.tree, name))
    np.testing.assert_array_equal(loaded.idf, vocab.idf)
    a, b = vocab.transform(desc[:100])[0], loaded.transform(desc[:100])[0]
    np.testing.assert_array_equal(a.words, b.words)
    np.testing.assert_array_equal(a.weights, b.weights)
    header = Vocabulary.read_header(path)
    assert header["kind"] == KIND and header["metadata"] == {"note": "test"}
    assert header["descriptor_bytes"] == 32 and len(header["checksum"]) == 64


@pytest.fixture()
def saved(tmp_path: Path, clustered_vocab: tuple[Vocabulary, np.ndarray]) -> Path:
    path = tmp_path / "v.npz"
    clustered_vocab[0].save(path)
    return path


def _rewrite(src: Path, dst: Path, header_edit: dict[str, object] | None = None,
             array_edit: str | None = None) -> None:
    with np.load(src) as z:
        arrays = {name: z[name].copy() for name in z.files}
    header = json.loads(arrays["header"].tobytes())
    header.update(header_edit or {})
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    if array_edit:
        arrays[array_edit].flat[0] += 1
    np.savez(dst, **arrays)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(VocabularyError, match="not found"):
        Vocabulary.load(tmp_path / "none.npz")


def test_truncated_file(tmp_path: Path, saved: Path) -> None:
    cut = tmp_path / "cut.npz"
    cut.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])
    with pytest.raises(VocabularyError, match="truncated or corrupt"):
        Vocabulary.load(cut)


def test_corrupt_bytes(tmp_path: Path, saved: Path) -> None:
    data = bytearray(saved.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(VocabularyError):
        Vocabulary.load(bad)


def test_checksum_mismatch(tmp_path: Path, saved: Path) -> None:
    bad = tmp_path / "bad.npz"
    _rewrite(saved, bad, array_edit="idf")
    with pytest.raises(VocabularyError, match="checksum"):
        Vocabulary.load(bad)


@pytest.mark.parametrize(
    ("edit", "message"),
    [({"kind": "slam-map"}, "'slam-map' file"), ({"version": 99}, "version"),
     ({"descriptor_bytes": 64}, "64 bytes")],
)
def test_wrong_kind_version_or_descriptor(
    tmp_path: Path, saved: Path, edit: dict[str, object], message: str
) -> None:
    bad = tmp_path / "bad.npz"
    _rewrite(saved, bad, header_edit=edit)
    with pytest.raises(VocabularyError, match=message):
        Vocabulary.load(bad)


def test_other_files(tmp_path: Path) -> None:
    text = tmp_path / "text.npz"
    text.write_text("hello\n")
    npy = tmp_path / "a.npy"
    np.save(npy, np.arange(3))
    no_header = tmp_path / "nh.npz"
    np.savez(no_header, centres=np.zeros((1, 32), np.uint8))
    pickled = tmp_path / "p.npz"
    with zipfile.ZipFile(pickled, "w") as z:
        z.writestr("header.npy", b"\x80\x04K\x01.")
    for path in (text, npy, no_header, pickled):
        with pytest.raises(VocabularyError):
            Vocabulary.load(path)

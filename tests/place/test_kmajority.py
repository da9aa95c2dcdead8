"""k-majority clustering kernels and the hierarchical tree, against numpy ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from slam.features.matching import as_words
from slam.place.kmajority import _majority, _seed_centres, build_tree, k_majority
from tests.place.synthetic_descriptors import clustered, hamming_matrix, random_descriptors


def test_k_majority_recovers_separated_clusters_and_their_centres() -> None:
    rng = np.random.default_rng(3)
    centres, desc, labels = clustered(6, 40, 12, rng)
    found, found_labels = k_majority(desc, 6, np.random.default_rng(0))
    assert len(found) == 6
    # the same partition, and each cluster's majority centre is the true centre
    for c in range(6):
        members = np.unique(found_labels[labels == c])
        assert len(members) == 1
        np.testing.assert_array_equal(found[members[0]], centres[c])


def test_k_majority_labels_point_at_the_nearest_centre() -> None:
    rng = np.random.default_rng(4)
    desc = random_descriptors(300, rng)
    centres, labels = k_majority(desc, 8, np.random.default_rng(1))
    d = hamming_matrix(desc, centres)
    np.testing.assert_array_equal(d[np.arange(300), labels], d.min(axis=1))
    assert set(labels.tolist()) == set(range(len(centres)))  # no empty cluster


def test_few_descriptors_become_one_cluster_each_distinct_one() -> None:
    rng = np.random.default_rng(5)
    desc = random_descriptors(3, rng)
    desc = np.concatenate([desc, desc[:1]])
    centres, labels = k_majority(desc, 10, rng)
    assert len(centres) == 3
    np.testing.assert_array_equal(centres[labels], desc)


def test_majority_kernel_is_the_per_bit_majority() -> None:
    rng = np.random.default_rng(6)
    desc = random_descriptors(101, rng)
    labels = rng.integers(0, 3, 101).astype(np.int32)
    centres, sizes = _majority(desc, labels, 3)
    for c in range(3):
        bits = np.unpackbits(desc[labels == c], axis=1, bitorder="little")
        expected = np.packbits(2 * bits.sum(axis=0) > len(bits), bitorder="little")
        np.testing.assert_array_equal(centres[c], expected)
        assert sizes[c] == np.count_nonzero(labels == c)


def test_seeding_picks_distinct_descriptors_and_stops_when_all_equal() -> None:
    rng = np.random.default_rng(7)
    desc = random_descriptors(50, rng)
    seeds = _seed_centres(as_words(desc), 10, rng.random((10, 3)))
    assert len(set(seeds.tolist())) == 10
    same = np.repeat(desc[:1], 20, axis=0)
    assert len(_seed_centres(as_words(same), 10, rng.random((10, 3)))) == 1


def test_tree_is_breadth_first_with_consecutive_children_and_leaves_as_words() -> None:
    rng = np.random.default_rng(8)
    tree = build_tree(random_descriptors(2000, rng), k=4, depth=3, seed=0)
    n = len(tree.n_children)
    depth = np.zeros(n, dtype=int)
    for node in range(n):
        kids = tree.first_child[node] + np.arange(tree.n_children[node])
        assert np.all(kids > node) and np.all(kids < n)
        depth[kids] = depth[node] + 1
    assert tree.n_children.max() <= 4 and depth.max() == 3
    leaves = np.flatnonzero(tree.n_children == 0)
    assert len(leaves) == 4**3 and n == 1 + 4 + 16 + 64
    np.testing.assert_array_equal(tree.node_word[leaves], np.arange(len(leaves)))
    assert np.all(tree.node_word[tree.n_children > 0] == -1)


def test_tree_of_identical_descriptors_is_a_single_leaf() -> None:
    desc = np.repeat(random_descriptors(1, np.random.default_rng(9)), 30, axis=0)
    tree = build_tree(desc, k=10, depth=4)
    assert len(tree.n_children) == 1 and tree.node_word[0] == 0


def test_tree_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        build_tree(random_descriptors(10, np.random.default_rng(0)), k=1, depth=2)

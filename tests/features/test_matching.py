"""Hamming kernels, grid radius search, epipolar and ratio matching on exact cases."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest

from slam.features.matching import (
    KeypointGrid,
    as_words,
    distinctive_descriptor,
    distinctive_descriptors,
    hamming_rows,
    match_epipolar,
    match_ratio,
    search_by_projection,
)
from slam.geometry.lie import hat, make_pose, so3_exp
from tests.map.factories import LEVEL_SIGMA2, flip_bits, project, random_descriptors

W, H = 320, 240
K = np.array([[250.0, 0.0, 160.0], [0.0, 250.0, 120.0], [0.0, 0.0, 1.0]])


def _popcount_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.unpackbits(a ^ b, axis=1).sum(axis=1)


# --- Hamming -----------------------------------------------------------------------------
def test_hamming_rows_equals_unpackbits_and_opencv() -> None:
    rng = np.random.default_rng(1)
    a = random_descriptors(rng, 200)
    b = random_descriptors(rng, 200)
    b[:5] = a[:5]
    b[5] = ~a[5]
    d = hamming_rows(a, b)
    assert d.dtype == np.int32
    np.testing.assert_array_equal(d, _popcount_rows(a, b))
    cv = [cv2.norm(a[i], b[i], cv2.NORM_HAMMING) for i in range(len(a))]
    np.testing.assert_array_equal(d, cv)
    assert d[:5].tolist() == [0] * 5 and d[5] == 256


def test_hamming_rows_non_contiguous_input() -> None:
    rng = np.random.default_rng(2)
    big = random_descriptors(rng, 40)
    a, b = big[::2], big[1::2]
    assert not a.flags.c_contiguous
    np.testing.assert_array_equal(hamming_rows(a, b), _popcount_rows(a, b))


def test_as_words_is_a_view_of_the_bits() -> None:
    rng = np.random.default_rng(3)
    d = random_descriptors(rng, 7)
    w = as_words(d)
    assert w.shape == (7, 4) and w.dtype == np.uint64
    np.testing.assert_array_equal(w.view(np.uint8).reshape(7, 32), d)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_distinctive_descriptor_is_the_lower_median_medoid(n: int) -> None:
    rng = np.random.default_rng(20 + n)
    base = random_descriptors(rng, 1)
    desc = flip_bits(np.repeat(base, n, axis=0), 1, rng)
    desc = np.vstack([flip_bits(desc[i:i + 1], 3 * i, rng) for i in range(n)])
    dist = np.array([[_popcount_rows(desc[[i]], desc[[j]])[0] for j in range(n)]
                     for i in range(n)])
    medians = np.sort(dist, axis=1)[:, (n - 1) // 2]
    got = distinctive_descriptor(desc)
    assert got.shape == (32,)
    np.testing.assert_array_equal(got, desc[int(np.argmin(medians))])


def test_distinctive_descriptors_of_many_sets_match_one_at_a_time() -> None:
    rng = np.random.default_rng(9)
    sizes = [1, 2, 5, 3, 8, 1]
    sets = [random_descriptors(rng, n) for n in sizes]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    best = distinctive_descriptors(np.vstack(sets), offsets)
    assert best.shape == (len(sizes),)
    for s, b in zip(sets, best):
        np.testing.assert_array_equal(s[b], distinctive_descriptor(s))


# --- grid --------------------------------------------------------------------------------
def test_keypoint_grid_buckets_every_keypoint() -> None:
    rng = np.random.default_rng(4)
    uv = rng.uniform([-5, -5], [W + 5, H + 5], size=(300, 2))  # some outside: clipped
    grid = KeypointGrid(uv, W, H, cell=16)
    assert (grid.n_cols, grid.n_rows) == (20, 15)
    assert grid.start[-1] == 300 and sorted(grid.order.tolist()) == list(range(300))
    for c in range(grid.n_cols * grid.n_rows):
        members = grid.order[grid.start[c]:grid.start[c + 1]]
        cx = np.clip(uv[members, 0] // 16, 0, 19)
        cy = np.clip(uv[members, 1] // 16, 0, 14)
        assert np.all(cy * 20 + cx == c)


# --- search by projection ----------------------------------------------------------------
class _Scene:
    """Keypoints at random pixels; 'map points' are noisy copies of some of them."""

    def __init__(self, seed: int = 5, n_kp: int = 400) -> None:
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.kp_uv = rng.uniform([0, 0], [W, H], size=(n_kp, 2))
        self.kp_oct = rng.integers(0, 4, n_kp).astype(np.int32)
        self.kp_desc = random_descriptors(rng, n_kp)
        self.grid = KeypointGrid(self.kp_uv, W, H)

    def search(self, proj_uv, proj_level, radius, pt_desc, free=None, **kw):  # type: ignore[no-untyped-def]
        free = np.ones(len(self.kp_uv), bool) if free is None else free
        return search_by_projection(
            np.asarray(proj_uv, float), np.asarray(proj_level, np.int32),
            np.asarray(radius, float), pt_desc, self.grid, self.kp_uv, self.kp_oct,
            self.kp_desc, free, **kw)


@pytest.fixture(scope="module")
def scene() -> _Scene:
    return _Scene()


def test_search_finds_the_right_keypoint(scene: _Scene) -> None:
    rng = np.random.default_rng(6)
    target = rng.choice(len(scene.kp_uv), 150, replace=False)
    proj = scene.kp_uv[target] + rng.uniform(-3, 3, size=(150, 2))
    desc = flip_bits(scene.kp_desc[target], 20, rng)
    idx, dist = scene.search(proj, scene.kp_oct[target], np.full(150, 5.0), desc)
    np.testing.assert_array_equal(idx, target)
    np.testing.assert_array_equal(dist, 20)


def test_search_respects_radius(scene: _Scene) -> None:
    j = 10
    desc = scene.kp_desc[[j, j]]
    proj = scene.kp_uv[[j, j]] + [[6.0, 0.0], [0.0, 0.0]]
    idx, _ = scene.search(proj, scene.kp_oct[[j, j]], [5.9, 0.1], desc)
    assert idx.tolist() == [-1, j]
    idx, _ = scene.search(proj[:1], scene.kp_oct[[j]], [6.1], desc[:1])
    assert idx.tolist() == [j]


def test_search_respects_level_window(scene: _Scene) -> None:
    j = 11
    desc = scene.kp_desc[[j]]
    uv = scene.kp_uv[[j]]
    o = int(scene.kp_oct[j])
    for level, window, found in [(o + 1, 1, True), (o + 2, 1, False), (o + 2, 2, True),
                                 (o + 7, -1, True), (o + 1, 0, False)]:
        idx, _ = scene.search(uv, [level], [2.0], desc, level_window=window)
        assert (idx[0] == j) == found, (level, window)


def test_search_skips_keypoints_that_are_not_free(scene: _Scene) -> None:
    j = 12
    free = np.ones(len(scene.kp_uv), bool)
    free[j] = False
    idx, _ = scene.search(scene.kp_uv[[j]], scene.kp_oct[[j]], [2.0], scene.kp_desc[[j]], free)
    assert idx[0] != j


def test_search_threshold_and_ratio(scene: _Scene) -> None:
    j = 13
    rng = np.random.default_rng(7)
    far = flip_bits(scene.kp_desc[[j]], 101, rng)
    idx, _ = scene.search(scene.kp_uv[[j]], scene.kp_oct[[j]], [2.0], far, th_high=100)
    assert idx[0] == -1
    idx, _ = scene.search(scene.kp_uv[[j]], scene.kp_oct[[j]], [2.0], far, th_high=101)
    assert idx[0] == j


def _two_candidates(level_b: int) -> tuple[np.ndarray, ...]:
    """Two keypoints 1 px apart; the query is 30 bits from A and 32 bits from B."""
    rng = np.random.default_rng(8)
    q = random_descriptors(rng, 1)
    bits = np.unpackbits(q, axis=1)
    a, b = bits.copy(), bits.copy()
    a[0, :30] ^= 1
    b[0, 100:132] ^= 1
    kp_desc = np.packbits(np.vstack([a, b]), axis=1)
    kp_uv = np.array([[50.0, 50.0], [51.0, 50.0]])
    kp_oct = np.array([2, level_b], np.int32)
    return q, kp_desc, kp_uv, kp_oct


@pytest.mark.parametrize(("level_b", "expect"), [(2, -1), (3, 0)])
def test_search_ratio_only_between_same_level(level_b: int, expect: int) -> None:
    q, kp_desc, kp_uv, kp_oct = _two_candidates(level_b)
    idx, _ = search_by_projection(np.array([[50.5, 50.0]]), np.array([2], np.int32),
                                  np.array([3.0]), q, KeypointGrid(kp_uv, W, H), kp_uv,
                                  kp_oct, kp_desc, np.ones(2, bool), ratio=0.9)
    assert idx[0] == expect


def test_search_uses_each_keypoint_once(scene: _Scene) -> None:
    j = 14
    rng = np.random.default_rng(9)
    desc = np.vstack([flip_bits(scene.kp_desc[[j]], 12, rng), flip_bits(scene.kp_desc[[j]], 4, rng),
                      flip_bits(scene.kp_desc[[j]], 8, rng)])
    uv = np.repeat(scene.kp_uv[[j]], 3, axis=0)
    idx, dist = scene.search(uv, np.repeat(scene.kp_oct[[j]], 3), [2.0] * 3, desc)
    assert idx.tolist() == [-1, j, -1]
    assert dist[1] == 4


def test_search_matches_brute_force_reference(scene: _Scene) -> None:
    """Every match is a valid candidate with the least distance among valid candidates."""
    rng = np.random.default_rng(10)
    m = 300
    proj = rng.uniform([0, 0], [W, H], size=(m, 2))
    level = rng.integers(0, 4, m).astype(np.int32)
    radius = rng.uniform(5, 25, m)
    desc = flip_bits(scene.kp_desc[rng.integers(0, len(scene.kp_uv), m)], 30, rng)
    free = rng.random(len(scene.kp_uv)) > 0.2
    idx, dist = scene.search(proj, level, radius, desc, free, th_high=256, ratio=1.0)
    n_hits = 0
    for i in range(m):
        ok = (np.hypot(*(scene.kp_uv - proj[i]).T) <= radius[i]) & free
        ok &= np.abs(scene.kp_oct - level[i]) <= 1
        cand = np.flatnonzero(ok)
        if idx[i] < 0:
            continue
        n_hits += 1
        assert idx[i] in cand
        d_all = _popcount_rows(np.repeat(desc[[i]], len(cand), 0), scene.kp_desc[cand])
        assert dist[i] == d_all.min() == _popcount_rows(desc[[i]], scene.kp_desc[[idx[i]]])[0]
    assert n_hits > 100
    hits = idx[idx >= 0]
    assert len(np.unique(hits)) == len(hits)


def test_search_empty_inputs(scene: _Scene) -> None:
    idx, dist = scene.search(np.zeros((0, 2)), np.zeros(0), np.zeros(0),
                             np.zeros((0, 32), np.uint8))
    assert idx.shape == (0,) and dist.shape == (0,)
    empty = np.zeros((0, 2))
    idx, _ = search_by_projection(np.ones((3, 2)), np.zeros(3, np.int32), np.ones(3),
                                  np.zeros((3, 32), np.uint8), KeypointGrid(empty, W, H),
                                  empty, np.zeros(0, np.int32), np.zeros((0, 32), np.uint8),
                                  np.zeros(0, bool))
    assert idx.tolist() == [-1, -1, -1]


# --- epipolar ----------------------------------------------------------------------------
class _TwoView:
    """Points seen by two cameras with a known relative pose; F21 built by hand."""

    def __init__(self, n: int = 150, seed: int = 11) -> None:
        rng = np.random.default_rng(seed)
        xyz = rng.uniform([-1.5, -1.0, 3.0], [1.5, 1.0, 6.0], size=(n, 3))
        self.T1 = np.eye(4)
        self.T2 = make_pose(so3_exp(np.array([0.02, -0.05, 0.01])), np.array([-0.3, 0.05, 0.02]))
        self.uv1, _ = project(K, self.T1, xyz)
        self.uv2, _ = project(K, self.T2, xyz)
        T21 = self.T2 @ np.linalg.inv(self.T1)
        K_inv = np.linalg.inv(K)
        self.F21 = K_inv.T @ hat(T21[:3, 3]) @ T21[:3, :3] @ K_inv
        self.desc1 = random_descriptors(rng, n)
        self.desc2 = flip_bits(self.desc1, 10, rng)
        self.perm = rng.permutation(n)  # keypoint i of image 2 is point perm[i]
        self.uv2, self.desc2 = self.uv2[self.perm], self.desc2[self.perm]
        self.oct = np.zeros(n, np.int32)
        self.n = n

    def match(self, **kw):  # type: ignore[no-untyped-def]
        args: dict[str, Any] = {
                "desc1": self.desc1, "desc2": self.desc2, "uv1": self.uv1, "uv2": self.uv2,
                "octave1": self.oct, "octave2": self.oct, "F21": self.F21,
                "free1": np.ones(self.n, bool), "free2": np.ones(len(self.uv2), bool),
                "level_sigma2": LEVEL_SIGMA2}
        args.update(kw)
        return match_epipolar(**args)


def _normalised(F: np.ndarray) -> np.ndarray:
    F = F / np.linalg.norm(F)
    return F * np.sign(F.flat[np.argmax(np.abs(F))])


def test_epipolar_matches_known_two_view() -> None:
    tv = _TwoView()
    # Our F agrees with OpenCV's 8-point estimate on the exact correspondences.
    inv = np.argsort(tv.perm)
    F_cv, _ = cv2.findFundamentalMat(tv.uv1, tv.uv2[inv], cv2.FM_8POINT)
    np.testing.assert_allclose(_normalised(F_cv), _normalised(tv.F21), atol=1e-6)
    m = tv.match()
    np.testing.assert_array_equal(m, inv)


def test_epipolar_rejects_candidates_off_the_line() -> None:
    tv = _TwoView()
    inv = np.argsort(tv.perm)
    i = 3
    j = inv[i]
    # Move the true keypoint 5 px along the epipolar line's normal: chi2 = 25 > 3.84.
    line = tv.F21 @ np.r_[tv.uv1[i], 1.0]
    normal = line[:2] / np.linalg.norm(line[:2])
    uv2 = tv.uv2.copy()
    uv2[j] += 5.0 * normal
    m = tv.match(uv2=uv2)
    assert m[i] == -1
    # 1.5 px off is within the threshold at level 0 (chi2 2.25 < 3.84) ...
    uv2[j] = tv.uv2[j] + 1.5 * normal
    assert tv.match(uv2=uv2)[i] == j
    # ... and the allowed offset grows with the level's sigma^2 (4.84 < 3.84 * 1.44).
    uv2[j] = tv.uv2[j] + 2.2 * normal
    oct2 = tv.oct.copy()
    oct2[j] = 1
    assert tv.match(uv2=uv2)[i] == -1
    assert tv.match(uv2=uv2, octave2=oct2)[i] == j


def test_epipolar_free_masks_and_octaves() -> None:
    tv = _TwoView()
    inv = np.argsort(tv.perm)
    free1 = np.ones(tv.n, bool)
    free1[:10] = False
    free2 = np.ones(tv.n, bool)
    free2[inv[10:20]] = False
    oct1 = tv.oct.copy()
    oct1[20:30] = 2
    m = tv.match(free1=free1, free2=free2, octave1=oct1)
    assert np.all(m[:30] == -1)
    np.testing.assert_array_equal(m[30:], inv[30:])


def test_epipolar_threshold_and_ratio() -> None:
    tv = _TwoView()
    inv = np.argsort(tv.perm)
    rng = np.random.default_rng(12)
    desc2 = tv.desc2.copy()
    desc2[inv[0]] = flip_bits(tv.desc1[[0]], 51, rng)[0]
    assert tv.match(desc2=desc2)[0] == -1
    assert tv.match(desc2=desc2, th_low=51)[0] == inv[0]
    # A second candidate on the same line with a similar descriptor makes it ambiguous.
    uv2 = np.vstack([tv.uv2, tv.uv2[inv[1]] + [0.0, 0.0]])
    desc2 = np.vstack([tv.desc2, flip_bits(tv.desc1[[1]], 12, rng)])
    oct2 = np.r_[tv.oct, 0].astype(np.int32)
    m = tv.match(uv2=uv2, desc2=desc2, octave2=oct2, free2=np.ones(tv.n + 1, bool))
    assert m[1] == -1
    np.testing.assert_array_equal(m[2:], inv[2:])


def test_epipolar_each_keypoint_of_image_2_once() -> None:
    tv = _TwoView()
    inv = np.argsort(tv.perm)
    rng = np.random.default_rng(13)
    # Image 1 gets a duplicate of keypoint 5 with a slightly worse descriptor.
    desc1 = np.vstack([tv.desc1, flip_bits(tv.desc1[[5]], 30, rng)])
    uv1 = np.vstack([tv.uv1, tv.uv1[[5]]])
    m = tv.match(desc1=desc1, uv1=uv1, octave1=np.zeros(tv.n + 1, np.int32),
                 free1=np.ones(tv.n + 1, bool))
    assert m[5] == inv[5] and m[-1] == -1
    hits = m[m >= 0]
    assert len(np.unique(hits)) == len(hits)


def test_epipolar_empty() -> None:
    tv = _TwoView()
    m = tv.match(desc2=np.zeros((0, 32), np.uint8), uv2=np.zeros((0, 2)),
                 octave2=np.zeros(0, np.int32), free2=np.zeros(0, bool))
    assert m.tolist() == [-1] * tv.n


# --- ratio matching ----------------------------------------------------------------------
def test_match_ratio_recovers_permutation() -> None:
    rng = np.random.default_rng(14)
    d1 = random_descriptors(rng, 120)
    perm = rng.permutation(120)
    d2 = flip_bits(d1, 15, rng)[perm]
    i1, i2 = match_ratio(d1, d2)
    assert len(i1) == 120
    np.testing.assert_array_equal(perm[i2], i1)


def test_match_ratio_agrees_with_opencv_and_is_unique() -> None:
    rng = np.random.default_rng(15)
    base = random_descriptors(rng, 60)
    d1 = np.vstack([flip_bits(base, 20, rng), random_descriptors(rng, 40)])
    d2 = np.vstack([flip_bits(base, 25, rng), random_descriptors(rng, 40)])
    d1[1] = d1[0]  # two queries with the same best train (index 0)
    i1, i2 = match_ratio(d1, d2, ratio=0.75, th=64)
    assert len(np.unique(i2)) == len(i2)
    assert set(i1.tolist()) >= set(range(2, 60)) and not set(i1.tolist()) & set(range(60, 100))
    assert np.count_nonzero(i2 == 0) == 1
    knn = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(d1, d2, k=2)
    ref = {m.queryIdx: m.trainIdx for m, n in knn if m.distance <= 64
           and m.distance < 0.75 * n.distance}
    for a, b in zip(i1, i2):
        assert ref[int(a)] == b


def test_match_ratio_small_inputs() -> None:
    d = np.zeros((1, 32), np.uint8)
    i1, i2 = match_ratio(d, np.zeros((5, 32), np.uint8))
    assert len(i1) == len(i2) == 0


def test_epipolar_candidates_by_octave_equal_a_full_scan() -> None:
    """The kernel scans, per level, only the free keypoints within one octave: the same
    matches as scanning every keypoint of image 2 (a brute-force reference here)."""
    rng = np.random.default_rng(21)
    n1, n2 = 300, 400
    d1 = random_descriptors(rng, n1)
    d2 = np.vstack([flip_bits(d1[:200], 12, rng), random_descriptors(rng, n2 - 200)])
    uv1 = rng.uniform(0, 640, (n1, 2))
    uv2 = np.vstack([uv1[:200] + rng.normal(0, 1.0, (200, 2)), rng.uniform(0, 640, (200, 2))])
    oct1 = rng.integers(0, 8, n1).astype(np.int32)
    oct2 = np.concatenate([oct1[:200] + rng.integers(-1, 2, 200), rng.integers(0, 8, 200)])
    oct2 = np.clip(oct2, 0, 7).astype(np.int32)
    F = np.array([[0.0, -1e-4, 0.02], [1e-4, 0.0, -0.03], [-0.02, 0.03, 1.0]])
    free1, free2 = rng.random(n1) < 0.8, rng.random(n2) < 0.8
    sigma2 = 1.2 ** (2 * np.arange(8))
    got = match_epipolar(d1, d2, uv1, uv2, oct1, oct2, F, free1, free2, sigma2,
                         th_low=80, ratio=0.9, max_epi_chi2=1e6)
    # Reference: every pair, in ascending order of image 2, then one owner per keypoint.
    words1 = np.unpackbits(d1, axis=1).astype(np.int32)
    words2 = np.unpackbits(d2, axis=1).astype(np.int32)
    ham = (words1[:, None, :] != words2[None, :, :]).sum(axis=2)
    lines = (F @ np.column_stack([uv1, np.ones(n1)]).T).T
    best = np.full(n1, -1)
    dist = np.full(n1, 256)
    for i in np.flatnonzero(free1):
        a, b, c = lines[i]
        ok = free2 & (np.abs(oct2 - oct1[i]) <= 1)
        ok &= (a * uv2[:, 0] + b * uv2[:, 1] + c) ** 2 / (a * a + b * b) <= 1e6 * sigma2[oct2]
        js = np.flatnonzero(ok)
        if len(js) == 0:
            continue
        order = js[np.argsort(ham[i, js], kind="stable")]
        first = ham[i, order[0]]
        second = ham[i, order[1]] if len(order) > 1 else 256
        if first <= 80 and first < 0.9 * second:
            best[i], dist[i] = order[0], first
    owner: dict[int, int] = {}
    for i in np.flatnonzero(best >= 0):
        j = int(best[i])
        if j not in owner or dist[i] < dist[owner[j]]:
            owner[j] = int(i)
    want = np.full(n1, -1)
    for j, i in owner.items():
        want[i] = j
    assert np.count_nonzero(want >= 0) > 100
    np.testing.assert_array_equal(got, want)

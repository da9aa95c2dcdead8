"""Descriptor matching kernels (Numba): Hamming distance, projection-guided search,
epipolar-constrained search between two keyframes, and brute-force ratio matching.

Descriptors are (N, 32) uint8 arrays (256-bit ORB). Distances are Hamming (0..256).
All kernels are ``nogil`` so they run beside the other threads.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import NDArray


@njit(cache=True, nogil=True, inline="always")
def _popcount64(x: np.uint64) -> int:
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return int((x * np.uint64(0x0101010101010101)) >> np.uint64(56))


@njit(cache=True, nogil=True, inline="always")
def _hamming(a: NDArray[np.uint64], b: NDArray[np.uint64]) -> int:
    d = 0
    for k in range(4):
        d += _popcount64(a[k] ^ b[k])
    return d


def as_words(desc: NDArray[np.uint8]) -> NDArray[np.uint64]:
    """View (N, 32) uint8 descriptors as (N, 4) uint64 words (copies if not contiguous)."""
    d = np.ascontiguousarray(desc, dtype=np.uint8).reshape(-1, 32)
    return d.view(np.uint64).reshape(-1, 4)


@njit(cache=True, nogil=True)
def _hamming_rows(a: NDArray[np.uint64], b: NDArray[np.uint64]) -> NDArray[np.int32]:
    out = np.empty(a.shape[0], np.int32)
    for i in range(a.shape[0]):
        out[i] = _hamming(a[i], b[i])
    return out


def hamming_rows(desc_a: NDArray[np.uint8], desc_b: NDArray[np.uint8]) -> NDArray[np.int32]:
    """Row-wise Hamming distances (N,) between two (N, 32) descriptor arrays."""
    return _hamming_rows(as_words(desc_a), as_words(desc_b))


@njit(cache=True, nogil=True)
def _distinctive(words):  # type: ignore[no-untyped-def]
    n = words.shape[0]
    dist = np.zeros((n, n), np.int32)
    for i in range(n):
        for j in range(i + 1, n):
            d = _hamming(words[i], words[j])
            dist[i, j] = d
            dist[j, i] = d
    best = 0
    best_median = 1 << 30
    for i in range(n):
        row = np.sort(dist[i])
        med = row[(n - 1) // 2]
        if med < best_median:
            best_median = med
            best = i
    return best


@njit(cache=True, nogil=True)
def _distinctive_segments(words, offsets):  # type: ignore[no-untyped-def]
    out = np.zeros(offsets.shape[0] - 1, np.int64)
    for s in range(offsets.shape[0] - 1):
        a, b = offsets[s], offsets[s + 1]
        if b - a > 2:
            out[s] = _distinctive(words[a:b])
    return out


def distinctive_descriptors(
    desc: NDArray[np.uint8], offsets: NDArray[np.int64]
) -> NDArray[np.int64]:
    """:func:`distinctive_descriptor` for many sets at once: ``desc`` (N, 32) holds the
    sets one after another, set ``s`` being rows ``offsets[s]:offsets[s+1]``; returns
    the chosen row of each set (S,) relative to its start (0 for sets of 1 or 2)."""
    return _distinctive_segments(as_words(desc), np.ascontiguousarray(offsets, np.int64))


def distinctive_descriptor(desc: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """The descriptor (32,) of ``desc`` (N, 32) with the least median Hamming distance
    to the others (ORB-SLAM's ``ComputeDistinctiveDescriptors``)."""
    return np.ascontiguousarray(desc[_distinctive(as_words(desc))])


class KeypointGrid:
    """Keypoints bucketed into square cells so that radius searches touch few of them."""

    def __init__(self, uv: NDArray[np.float64], width: int, height: int, cell: int = 16) -> None:
        self.cell = cell
        self.n_cols = max(1, (width + cell - 1) // cell)
        self.n_rows = max(1, (height + cell - 1) // cell)
        cx = np.clip((uv[:, 0] // cell).astype(np.int64), 0, self.n_cols - 1)
        cy = np.clip((uv[:, 1] // cell).astype(np.int64), 0, self.n_rows - 1)
        cell_id = cy * self.n_cols + cx
        self.order = np.argsort(cell_id, kind="stable").astype(np.int64)
        counts = np.bincount(cell_id, minlength=self.n_cols * self.n_rows)
        self.start = np.zeros(self.n_cols * self.n_rows + 1, np.int64)
        np.cumsum(counts, out=self.start[1:])


@njit(cache=True, nogil=True)
def _search_projection(
    proj_uv, proj_level, radius, pt_words, kp_uv, kp_octave, kp_words, kp_free,
    order, start, cell, n_cols, n_rows, th_high, ratio, level_window,
):  # type: ignore[no-untyped-def]
    m = proj_uv.shape[0]
    best_idx = np.full(m, -1, np.int64)
    best_dist = np.full(m, 256, np.int32)
    for i in range(m):
        u = proj_uv[i, 0]
        v = proj_uv[i, 1]
        r = radius[i]
        x0 = max(0, int((u - r) // cell))
        x1 = min(n_cols - 1, int((u + r) // cell))
        y0 = max(0, int((v - r) // cell))
        y1 = min(n_rows - 1, int((v + r) // cell))
        d1 = 256
        d2 = 256
        i1 = -1
        lvl1 = -1
        lvl2 = -1
        for cy in range(y0, y1 + 1):
            for cx in range(x0, x1 + 1):
                c = cy * n_cols + cx
                for s in range(start[c], start[c + 1]):
                    j = order[s]
                    if not kp_free[j]:
                        continue
                    if level_window >= 0 and abs(kp_octave[j] - proj_level[i]) > level_window:
                        continue
                    du = kp_uv[j, 0] - u
                    dv = kp_uv[j, 1] - v
                    if du * du + dv * dv > r * r:
                        continue
                    d = _hamming(pt_words[i], kp_words[j])
                    if d < d1:
                        d2 = d1
                        lvl2 = lvl1
                        d1 = d
                        i1 = j
                        lvl1 = kp_octave[j]
                    elif d < d2:
                        d2 = d
                        lvl2 = kp_octave[j]
        # Ratio test only between candidates at the same level (as ORB-SLAM).
        if i1 >= 0 and d1 <= th_high and not (lvl1 == lvl2 and d1 > ratio * d2):
            best_idx[i] = i1
            best_dist[i] = d1
    return best_idx, best_dist


@njit(cache=True, nogil=True)
def _unique_best(best_idx, best_dist, n_kp):  # type: ignore[no-untyped-def]
    """Let each keypoint keep only the query with the smallest distance."""
    owner = np.full(n_kp, -1, np.int64)
    for i in range(best_idx.shape[0]):
        j = best_idx[i]
        if j < 0:
            continue
        o = owner[j]
        if o < 0 or best_dist[i] < best_dist[o]:
            if o >= 0:
                best_idx[o] = -1
            owner[j] = i
        else:
            best_idx[i] = -1
    return best_idx


def search_by_projection(
    proj_uv: NDArray[np.float64],
    proj_level: NDArray[np.int32],
    radius: NDArray[np.float64],
    pt_desc: NDArray[np.uint8],
    grid: KeypointGrid,
    kp_uv: NDArray[np.float64],
    kp_octave: NDArray[np.int32],
    kp_desc: NDArray[np.uint8],
    kp_free: NDArray[np.bool_],
    th_high: int = 100,
    ratio: float = 0.9,
    level_window: int = 1,
) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
    """Match projected map points to keypoints near their projections.

    ``proj_uv`` (M, 2) predicted pixels, ``proj_level`` (M,) predicted octave,
    ``radius`` (M,) search radius in pixels, ``pt_desc`` (M, 32). Keypoints
    ``kp_*`` (N, ...) with ``kp_free`` (N,) marking those still available.
    ``level_window < 0`` disables the octave check. Returns the matched keypoint
    index per point (-1 when none, each keypoint used at most once) and distances.
    """
    if len(proj_uv) == 0 or len(kp_uv) == 0:
        return np.full(len(proj_uv), -1, np.int64), np.full(len(proj_uv), 256, np.int32)
    idx, dist = _search_projection(
        np.ascontiguousarray(proj_uv, np.float64),
        np.ascontiguousarray(proj_level, np.int32),
        np.ascontiguousarray(radius, np.float64),
        as_words(pt_desc),
        np.ascontiguousarray(kp_uv, np.float64),
        np.ascontiguousarray(kp_octave, np.int32),
        as_words(kp_desc),
        np.ascontiguousarray(kp_free, np.bool_),
        grid.order, grid.start, float(grid.cell), grid.n_cols, grid.n_rows,
        int(th_high), float(ratio), int(level_window),
    )
    return _unique_best(idx, dist, len(kp_uv)), dist


@njit(cache=True, nogil=True)
def _octave_candidates(oct2, free2, n_levels):  # type: ignore[no-untyped-def]
    """For each level o (CSR ``start`` (n_levels + 1,), ``idx``): the free keypoints of
    image 2 whose octave is within one of o, ascending (the order of a full scan)."""
    n2 = oct2.shape[0]
    count = np.zeros(n_levels + 1, np.int64)
    for o in range(n_levels):
        for j in range(n2):
            if free2[j] and abs(oct2[j] - o) <= 1:
                count[o + 1] += 1
    start = np.cumsum(count)
    idx = np.empty(start[n_levels], np.int64)
    k = 0
    for o in range(n_levels):
        for j in range(n2):
            if free2[j] and abs(oct2[j] - o) <= 1:
                idx[k] = j
                k += 1
    return start, idx


@njit(cache=True, nogil=True)
def _match_epipolar(
    w1, w2, xn1, xn2, oct1, oct2, F, free1, free2, th_low, ratio, max_epi, sigma2_lvl,
):  # type: ignore[no-untyped-def]
    n1 = w1.shape[0]
    best = np.full(n1, -1, np.int64)
    bdist = np.full(n1, 256, np.int32)
    n_levels = 1
    for i in range(n1):
        n_levels = max(n_levels, oct1[i] + 1)
    for j in range(oct2.shape[0]):
        n_levels = max(n_levels, oct2[j] + 1)
    start, cand = _octave_candidates(oct2, free2, n_levels)
    for i in range(n1):
        if not free1[i]:
            continue
        x = xn1[i, 0]
        y = xn1[i, 1]
        a = F[0, 0] * x + F[0, 1] * y + F[0, 2]
        b = F[1, 0] * x + F[1, 1] * y + F[1, 2]
        c = F[2, 0] * x + F[2, 1] * y + F[2, 2]
        nrm = a * a + b * b
        if nrm < 1e-20:
            continue
        d1 = 256
        d2 = 256
        j1 = -1
        o = oct1[i]
        for t in range(start[o], start[o + 1]):
            j = cand[t]
            num = a * xn2[j, 0] + b * xn2[j, 1] + c
            if num * num / nrm > max_epi * sigma2_lvl[oct2[j]]:
                continue
            d = _hamming(w1[i], w2[j])
            if d < d1:
                d2 = d1
                d1 = d
                j1 = j
            elif d < d2:
                d2 = d
        if j1 >= 0 and d1 <= th_low and d1 < ratio * d2:
            best[i] = j1
            bdist[i] = d1
    return best, bdist


def match_epipolar(
    desc1: NDArray[np.uint8],
    desc2: NDArray[np.uint8],
    uv1: NDArray[np.float64],
    uv2: NDArray[np.float64],
    octave1: NDArray[np.int32],
    octave2: NDArray[np.int32],
    F21: NDArray[np.float64],
    free1: NDArray[np.bool_],
    free2: NDArray[np.bool_],
    level_sigma2: NDArray[np.float64],
    th_low: int = 50,
    ratio: float = 0.6,
    max_epi_chi2: float = 3.84,
) -> NDArray[np.int64]:
    """Match unmatched keypoints of two keyframes along epipolar lines.

    ``F21`` (3x3) maps pixels of image 1 to epipolar lines in image 2
    (``uv2^T F21 uv1 = 0``). Keypoints (N1/N2, ...) in ideal pixels; ``free*``
    select candidates. Returns, for each keypoint of image 1, its match in image
    2 or -1; each keypoint of image 2 is used at most once.
    """
    if len(desc1) == 0 or len(desc2) == 0:
        return np.full(len(desc1), -1, np.int64)
    best, dist = _match_epipolar(
        as_words(desc1), as_words(desc2),
        np.ascontiguousarray(uv1, np.float64), np.ascontiguousarray(uv2, np.float64),
        np.ascontiguousarray(octave1, np.int32), np.ascontiguousarray(octave2, np.int32),
        np.ascontiguousarray(F21, np.float64),
        np.ascontiguousarray(free1, np.bool_), np.ascontiguousarray(free2, np.bool_),
        int(th_low), float(ratio), float(max_epi_chi2),
        np.ascontiguousarray(level_sigma2, np.float64),
    )
    return _unique_best(best, dist, len(desc2))


@njit(cache=True, nogil=True)
def _ratio_best(w1, w2, th, ratio):  # type: ignore[no-untyped-def]
    """For each row of ``w1``: the nearest row of ``w2`` by Hamming distance when it is
    within ``th`` and below ``ratio`` times the second nearest, else -1; and the distance."""
    n1, n2 = w1.shape[0], w2.shape[0]
    best = np.full(n1, -1, np.int64)
    dist = np.full(n1, 256, np.int32)
    for i in range(n1):
        d0, d1, j0 = 257, 257, -1
        for j in range(n2):
            d = _hamming(w1[i], w2[j])
            if d < d0:
                d1, d0, j0 = d0, d, j
            elif d < d1:
                d1 = d
        if d0 <= th and d0 < ratio * d1:
            best[i] = j0
            dist[i] = d0
    return best, dist


def match_ratio(
    desc1: NDArray[np.uint8], desc2: NDArray[np.uint8], ratio: float = 0.75, th: int = 64
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Brute-force matches with Lowe's ratio test and mutual uniqueness (a Numba kernel
    that releases the GIL: loop closing runs it beside tracking).

    Returns index arrays ``(i1, i2)`` of equal length into ``desc1`` and ``desc2``.
    """
    if len(desc1) < 2 or len(desc2) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    best, dist = _ratio_best(as_words(desc1), as_words(desc2), int(th), float(ratio))
    best = _unique_best(best, dist, len(desc2))
    i1 = np.flatnonzero(best >= 0)
    return i1.astype(np.int64), best[i1]

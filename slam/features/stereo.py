"""Depth for keypoints: from a registered depth image (RGB-D) or by matching
along rows of a rectified stereo pair, refined to sub-pixel by SAD correlation."""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import NDArray

from slam.features.matching import _hamming, as_words
from slam.features.orb import Keypoints


def depth_from_image(
    uv_raw: NDArray[np.float64], depth_m: NDArray[np.float32], max_depth_m: float = 20.0
) -> NDArray[np.float64]:
    """Depth (N,) metres at raw keypoint pixels (N, 2) (nearest pixel); -1 where invalid."""
    h, w = depth_m.shape
    u = np.clip(np.rint(uv_raw[:, 0]).astype(np.int64), 0, w - 1)
    v = np.clip(np.rint(uv_raw[:, 1]).astype(np.int64), 0, h - 1)
    d = depth_m[v, u].astype(np.float64)
    bad = ~np.isfinite(d) | (d <= 0) | (d > max_depth_m)
    d[bad] = -1.0
    return d


@njit(cache=True, nogil=True)
def _row_buckets(uvr, octr, scale, h):  # type: ignore[no-untyped-def]
    """Right keypoints by image row (CSR: ``start`` (h + 1,), ``idx``): keypoint j is
    in every row within ``2 * scale[octave]`` of its own (ORB-SLAM's row buckets),
    in ascending j within a row."""
    m = uvr.shape[0]
    lo = np.empty(m, np.int64)
    hi = np.empty(m, np.int64)
    count = np.zeros(h + 1, np.int64)
    for j in range(m):
        r = 2.0 * scale[octr[j]]
        lo[j] = max(0, int(np.floor(uvr[j, 1] - r)))
        hi[j] = min(h - 1, int(np.ceil(uvr[j, 1] + r)))
        for y in range(lo[j], hi[j] + 1):
            count[y + 1] += 1
    start = np.cumsum(count)
    fill = start[:-1].copy()
    idx = np.empty(start[h], np.int64)
    for j in range(m):
        for y in range(lo[j], hi[j] + 1):
            idx[fill[y]] = j
            fill[y] += 1
    return start, idx


@njit(cache=True, nogil=True)
def _stereo_match(
    uvl, octl, wl, uvr, octr, wr, scale, min_disp, max_disp, th, left, right, half, search
):  # type: ignore[no-untyped-def]
    n = uvl.shape[0]
    out = np.full(n, -1.0)
    dist = np.full(n, 256, np.int32)
    h = left.shape[0]
    w = left.shape[1]
    start, bucket = _row_buckets(uvr, octr, scale, h)
    for i in range(n):
        ul = uvl[i, 0]
        vl = uvl[i, 1]
        best = th + 1
        bj = -1
        row = min(h - 1, max(0, int(np.floor(vl + 0.5))))
        for t in range(start[row], start[row + 1]):
            j = bucket[t]
            r = 2.0 * scale[octr[j]]
            if abs(uvr[j, 1] - vl) > r:
                continue
            if abs(octr[j] - octl[i]) > 1:
                continue
            disp = ul - uvr[j, 0]
            if disp < min_disp or disp > max_disp:
                continue
            d = _hamming(wl[i], wr[j])
            if d < best:
                best = d
                bj = j
        if bj < 0:
            continue
        # Sub-pixel refinement by SAD on the full-resolution images.
        ur0 = int(round(uvr[bj, 0]))
        u0 = int(round(ul))
        v0 = int(round(vl))
        if v0 - half < 0 or v0 + half >= h or u0 - half < 0 or u0 + half >= w:
            continue
        if ur0 - half - search < 0 or ur0 + half + search >= w:
            continue
        costs = np.empty(2 * search + 1)
        for k in range(-search, search + 1):
            s = 0.0
            for dy in range(-half, half + 1):
                for dx in range(-half, half + 1):
                    a = float(left[v0 + dy, u0 + dx]) - float(left[v0, u0])
                    b = float(right[v0 + dy, ur0 + k + dx]) - float(right[v0, ur0 + k])
                    s += abs(a - b)
            costs[k + search] = s
        kbest = int(np.argmin(costs))
        if kbest == 0 or kbest == 2 * search:
            continue
        c1 = costs[kbest - 1]
        c2 = costs[kbest]
        c3 = costs[kbest + 1]
        den = 2.0 * (c1 + c3 - 2.0 * c2)
        delta = 0.0 if den == 0 else (c1 - c3) / den
        if delta < -1.0 or delta > 1.0:
            continue
        # The windows are centred on the rounded left column: shift back by its rounding.
        ur = ur0 + (kbest - search) + delta + (ul - u0)
        disp = ul - ur
        if disp < min_disp or disp > max_disp:
            continue
        if disp <= 0:
            disp = 0.01
            ur = ul - disp
        out[i] = ur
        dist[i] = best
    return out, dist


def stereo_u_right(
    left_kp: Keypoints,
    right_kp: Keypoints,
    left: NDArray[np.uint8],
    right: NDArray[np.uint8],
    scale_factors: NDArray[np.float64],
    bf: float,
    fx: float,
    th_hamming: int = 75,
) -> NDArray[np.float64]:
    """Right-image column (N,) of each left keypoint, -1 where unmatched.

    Images must be rectified (and undistorted), so raw keypoint positions are ideal.
    The disparity is limited to ``[0, bf / b]`` i.e. depth >= one baseline.
    """
    if len(left_kp) == 0 or len(right_kp) == 0:
        return np.full(len(left_kp), -1.0)
    max_disp = bf / (bf / fx)  # = fx: points closer than one baseline are rejected
    ur, dist = _stereo_match(
        left_kp.uv_raw, left_kp.octave, as_words(left_kp.descriptors),
        right_kp.uv_raw, right_kp.octave, as_words(right_kp.descriptors),
        np.ascontiguousarray(scale_factors), 0.0, float(max_disp), int(th_hamming),
        np.ascontiguousarray(left), np.ascontiguousarray(right), 5, 5,
    )
    # Reject outliers by distance, as ORB-SLAM does: keep dist < 1.5 * 1.4 * median.
    ok = ur >= 0
    if np.count_nonzero(ok) > 0:
        med = float(np.median(dist[ok]))
        ur[ok & (dist > 1.5 * 1.4 * med)] = -1.0
    return ur

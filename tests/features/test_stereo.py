"""Keypoint depth: RGB-D lookup and stereo row matching against the renderer's exact depth."""

from __future__ import annotations

import numpy as np
import pytest

from slam.features.orb import Keypoints, OrbExtractor
from slam.features.stereo import _row_buckets, depth_from_image, stereo_u_right
from tests.map.factories import feature_config, synthetic_calibration, synthetic_sensor_frame


# --- RGB-D -------------------------------------------------------------------------------
def test_depth_from_image_nearest_pixel_and_invalid() -> None:
    depth = np.arange(20, dtype=np.float32).reshape(4, 5) / 2.0  # 0 .. 9.5 m
    depth[2, 3] = np.nan
    depth[3, 4] = 30.0
    uv = np.array([[1.4, 0.6], [3.0, 2.0], [0.0, 0.0], [4.2, 3.4], [2.51, 1.49],
                   [-3.0, 1.0], [9.0, 9.0]])
    d = depth_from_image(uv, depth, max_depth_m=20.0)
    assert d.dtype == np.float64
    # (1, 1) -> 3.0; NaN -> -1; 0 m -> -1; 30 m > max -> -1; (3, 1) -> 4.0; clipped borders.
    np.testing.assert_array_equal(d, [3.0, -1.0, -1.0, -1.0, 4.0, 2.5, -1.0])
    assert depth_from_image(uv[3:4], depth, max_depth_m=40.0)[0] == 30.0


def test_depth_from_image_matches_rendered_depth() -> None:
    sf = synthetic_sensor_frame("rgbd", 3)
    assert sf.depth_m is not None
    rng = np.random.default_rng(0)
    uv = rng.integers([0, 0], [320, 240], size=(50, 2)).astype(np.float64)
    d = depth_from_image(uv + 0.3, sf.depth_m)
    np.testing.assert_array_equal(d, sf.depth_m[uv[:, 1].astype(int), uv[:, 0].astype(int)])


# --- stereo ------------------------------------------------------------------------------
class _Pair:
    def __init__(self, index: int) -> None:
        st = synthetic_sensor_frame("stereo", index)
        depth = synthetic_sensor_frame("rgbd", index).depth_m
        assert st.right is not None and depth is not None
        calib = synthetic_calibration("stereo")
        assert calib.stereo_bf is not None
        self.left, self.right, self.depth = st.image, st.right, depth
        self.bf = calib.stereo_bf
        self.fx = calib.camera.fx
        self.ex = OrbExtractor(feature_config(), 1000)
        self.kl = self.ex.extract(self.left)
        self.kr = self.ex.extract(self.right)

    def u_right(self, kl: Keypoints | None = None, kr: Keypoints | None = None,
                **kw: float) -> np.ndarray:
        kl = self.kl if kl is None else kl
        kr = self.kr if kr is None else kr
        return stereo_u_right(kl, kr, self.left, self.right,
                              self.ex.scale_factors, self.bf, self.fx, **kw)  # type: ignore[arg-type]

    def true_disparity(self, uv: np.ndarray) -> np.ndarray:
        return self.bf / depth_from_image(uv, self.depth)


@pytest.fixture(scope="module", params=[0, 4])
def pair(request: pytest.FixtureRequest) -> _Pair:
    return _Pair(request.param)


def test_stereo_disparity_matches_exact_depth(pair: _Pair) -> None:
    ur = pair.u_right()
    ok = ur >= 0
    assert ok.mean() > 0.45
    err = (pair.kl.uv_raw[ok, 0] - ur[ok]) - pair.true_disparity(pair.kl.uv_raw[ok])
    assert np.median(np.abs(err)) < 0.3
    assert np.mean(np.abs(err) > 2.0) < 0.03
    # Disparity limits: 0 < disparity <= fx (depth of at least one baseline).
    disp = pair.kl.uv_raw[ok, 0] - ur[ok]
    assert np.all((disp > 0) & (disp <= pair.fx))


def test_stereo_subpixel_is_not_biased_by_rounding(pair: _Pair) -> None:
    ur = pair.u_right()
    ok = ur >= 0
    err = (pair.kl.uv_raw[ok, 0] - ur[ok]) - pair.true_disparity(pair.kl.uv_raw[ok])
    frac = pair.kl.uv_raw[ok, 0] - np.rint(pair.kl.uv_raw[ok, 0])
    assert np.median(np.abs(err)) < 0.15
    assert abs(np.corrcoef(err, frac)[0, 1]) < 0.3


def test_stereo_rows_respected(pair: _Pair) -> None:
    """Right keypoints moved 20 rows down cannot match any more."""
    kr = pair.kr
    moved = Keypoints(kr.uv_raw + np.array([0.0, 20.0]), kr.octave, kr.angle, kr.response,
                      kr.descriptors)
    ur = pair.u_right(kr=moved)
    # Survivors only where a feature 20 rows below has a similar look: a handful at most.
    assert np.count_nonzero(ur >= 0) < 0.05 * np.count_nonzero(pair.u_right() >= 0)


def test_stereo_hamming_threshold(pair: _Pair) -> None:
    n_default = np.count_nonzero(pair.u_right() >= 0)
    n_strict = np.count_nonzero(pair.u_right(th_hamming=10) >= 0)
    assert n_strict < 0.7 * n_default


def test_stereo_empty_inputs(pair: _Pair) -> None:
    empty = Keypoints(np.zeros((0, 2)), np.zeros(0, np.int32), np.zeros(0, np.float32),
                      np.zeros(0, np.float32), np.zeros((0, 32), np.uint8))
    assert pair.u_right(kr=empty).tolist() == [-1.0] * len(pair.kl)
    assert pair.u_right(kl=empty).shape == (0,)


def test_row_buckets_hold_every_right_keypoint_a_left_row_may_match() -> None:
    """The row buckets are a superset of the exact row test (so the search finds what a
    search over all right keypoints finds), and not much more."""
    rng = np.random.default_rng(3)
    h, m = 120, 400
    scale = 1.2 ** np.arange(8)
    uvr = np.column_stack([rng.uniform(0, 300, m), rng.uniform(-1, h + 1, m)])
    octr = rng.integers(0, 8, m).astype(np.int32)
    start, idx = _row_buckets(uvr, octr, scale, h)
    assert len(start) == h + 1
    for vl in rng.uniform(0, h - 1, 300):
        row = min(h - 1, int(np.floor(vl + 0.5)))
        bucket = idx[start[row]:start[row + 1]]
        exact = np.flatnonzero(np.abs(uvr[:, 1] - vl) <= 2.0 * scale[octr])
        assert set(exact) <= set(bucket.tolist())
        assert np.all(np.diff(bucket) > 0)  # ascending: ties break as in a full scan
        assert np.all(np.abs(uvr[bucket, 1] - row) <= 2.0 * scale[octr[bucket]] + 1.0)

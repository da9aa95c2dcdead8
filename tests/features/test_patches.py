"""Patch sampling: layout, orientation, octave scaling, against OpenCV's warpAffine."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from slam.features.patches import (
    PatchSampler,
    patch_offsets,
    standardize,
    unshuffle_patches,
)


def _texture(h: int = 120, w: int = 160, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.uniform(0, 255, (h, w)).astype(np.float32), (0, 0), 2.0)
    img = (img - img.min()) / (img.max() - img.min()) * 255
    return img.astype(np.uint8)


def test_offsets_are_centred_and_cover_the_patch() -> None:
    off = patch_offsets(4)
    assert off.shape == (2, 16)
    assert off[0].tolist()[:4] == [-1.5, -0.5, 0.5, 1.5]
    assert off[1].tolist()[::4] == [-1.5, -0.5, 0.5, 1.5]


def test_unshuffled_sampling_is_pixel_unshuffle_of_the_plain_patch() -> None:
    img = _texture()
    uv = np.array([[60.3, 50.7], [80.0, 64.0], [100.5, 70.25]])
    octave = np.array([0, 1, 2], np.int32)
    angle = np.array([0.0, 33.0, 250.0], np.float32)
    plain = PatchSampler(unshuffle=1).sample(img, uv, octave, angle)
    packed = PatchSampler(unshuffle=4).sample(img, uv, octave, angle)
    assert plain.shape == (3, 32, 32)
    assert packed.shape == (3, 16, 8, 8)
    np.testing.assert_array_equal(packed, unshuffle_patches(plain, 4))
    # channel dy*4+dx, position (i, j) holds pixel (4i+dy, 4j+dx)
    assert packed[1, 2 * 4 + 3, 5, 6] == plain[1, 4 * 5 + 2, 4 * 6 + 3]


def test_patch_matches_opencv_warp_affine() -> None:
    img = _texture()
    u, v, a_deg = 75.4, 58.6, 40.0
    patch = PatchSampler(unshuffle=1).sample(img, np.array([[u, v]]), np.array([0], np.int32),
                                             np.array([a_deg], np.float32))[0]
    a = np.radians(a_deg)
    # patch (x, y) -> image: centre + R(a) (x - 15.5, y - 15.5)
    M = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0]])
    M[:, 2] = [u, v] - M[:, :2] @ [15.5, 15.5]
    want = cv2.warpAffine(img, M, (32, 32), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)
    assert np.abs(patch.astype(int) - want.astype(int)).max() <= 1


def test_rotating_the_image_and_the_angle_gives_the_same_patch() -> None:
    img = _texture(100, 100)
    uv = np.array([[40.0, 55.0]])
    p0 = PatchSampler().sample(img, uv, np.array([0], np.int32), np.array([10.0], np.float32))
    # np.rot90 (counter-clockwise on screen): (u, v) -> (v, W-1-u); in image axes
    # (y down) that is a rotation by -90 degrees, so the angle drops by 90.
    rot = np.ascontiguousarray(np.rot90(img))
    uv_rot = np.array([[uv[0, 1], img.shape[1] - 1 - uv[0, 0]]])
    p1 = PatchSampler().sample(rot, uv_rot, np.array([0], np.int32),
                               np.array([10.0 - 90.0], np.float32))
    assert np.abs(p0.astype(int) - p1.astype(int)).max() <= 1


def test_octave_samples_the_pyramid_level() -> None:
    img = _texture(240, 320)
    sampler = PatchSampler(scale_factor=1.2, n_levels=3)
    uv = np.array([[150.0, 100.0]])
    at_1 = sampler.sample(img, uv, np.array([1], np.int32), np.array([20.0], np.float32))
    level1 = sampler.pyramid(img)[1]
    h, w = img.shape
    assert level1.shape == (round(h / 1.2), round(w / 1.2))
    np.testing.assert_array_equal(
        level1, cv2.resize(img, (round(w / 1.2), round(h / 1.2)), interpolation=cv2.INTER_LINEAR))
    direct = PatchSampler(n_levels=1).sample(level1, uv / 1.2, np.array([0], np.int32),
                                             np.array([20.0], np.float32))
    np.testing.assert_array_equal(at_1, direct)


def test_no_keypoints_gives_no_patches() -> None:
    out = PatchSampler(unshuffle=4).sample(_texture(), np.zeros((0, 2)), np.zeros(0, np.int32),
                                           np.zeros(0, np.float32))
    assert out.shape == (0, 16, 8, 8)


def test_standardize_zero_mean_unit_std_and_flat_patches() -> None:
    rng = np.random.default_rng(1)
    p = rng.integers(0, 256, (5, 16, 8, 8)).astype(np.uint8)
    p[4] = 77
    x = standardize(p, eps=0.0 + 1e-6)
    flat = x.reshape(5, -1)
    np.testing.assert_allclose(flat[:4].mean(axis=1), 0.0, atol=1e-4)
    np.testing.assert_allclose(flat[:4].std(axis=1), 1.0, atol=1e-3)
    np.testing.assert_allclose(flat[4], 0.0, atol=1e-4)
    ref = (p[0].astype(np.float64) - p[0].mean()) / (p[0].std() + 1.0)
    np.testing.assert_allclose(standardize(p)[0], ref, atol=1e-4)


def test_unshuffle_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError):
        patch_offsets(30, 4)

"""Patch alignment: the warp against finite differences, refined matches against the
exact correspondences of the synthetic renderer."""

from __future__ import annotations

import numpy as np
import pytest

from slam.config import FeatureConfig
from slam.features.orb import OrbExtractor
from slam.features.subpixel import HALF, align_patches, warp_inverse
from slam.geometry.lie import make_pose, se3_inv, so3_exp
from slam.synthetic.source import make_synthetic_source

FX, FY, CX, CY = 500.0, 480.0, 320.0, 240.0


def _project(T: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    p = T[:3, :3] @ xyz + T[:3, 3]
    return np.array([FX * p[0] / p[2] + CX, FY * p[1] / p[2] + CY])


def test_warp_inverse_matches_finite_differences_of_the_projection() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        T_cur_ref = make_pose(so3_exp(rng.normal(0, 0.3, 3)), rng.normal(0, 0.3, 3))
        uv_ref = rng.uniform([50, 50], [590, 430])
        z = rng.uniform(1.0, 5.0)
        ray = np.array([(uv_ref[0] - CX) / FX, (uv_ref[1] - CY) / FY, 1.0])
        xyz_ref = z * ray
        if (T_cur_ref[:3, :3] @ xyz_ref + T_cur_ref[:3, 3])[2] < 0.5:
            continue
        # a fronto-parallel patch: moving a pixel in the reference keeps the depth
        h = 1e-3
        A = np.empty((2, 2))
        for c in range(2):
            d = np.zeros(2)
            d[c] = h
            shifted = np.array([(uv_ref[0] + d[0] - CX) / FX * z,
                                (uv_ref[1] + d[1] - CY) / FY * z, z])
            A[:, c] = (_project(T_cur_ref, shifted) - _project(T_cur_ref, xyz_ref)) / h
        assert warp_inverse(T_cur_ref, xyz_ref, FX, FY) == pytest.approx(np.linalg.inv(A),
                                                                        rel=1e-5, abs=1e-7)


def _matched_pair(a: int, b: int):  # type: ignore[no-untyped-def]
    """ORB matches of synthetic frames a -> b, the exact positions in b, and what
    :func:`align_patches` needs (true poses, depth of frame a)."""
    import cv2

    src = make_synthetic_source("loop", "rgbd")
    cam = src.calibration.camera  # type: ignore[union-attr]
    gt = src.ground_truth().T_world_cam
    ex = OrbExtractor(FeatureConfig(), 1000)
    fa, fb = src.frame(a), src.frame(b)
    ka, kb = ex.extract(fa.image), ex.extract(fb.image)
    found = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(ka.descriptors, kb.descriptors)
    ia = np.array([m.queryIdx for m in found])
    ib = np.array([m.trainIdx for m in found])
    uv_a, uv_b = ka.uv_raw[ia], kb.uv_raw[ib]
    assert fa.depth_m is not None
    z = fa.depth_m[np.round(uv_a[:, 1]).astype(int), np.round(uv_a[:, 0]).astype(int)]
    xyz_a = np.c_[(uv_a - [cam.cx, cam.cy]) / [cam.fx, cam.fy] * z[:, None], z]
    xyz_world = xyz_a @ gt[a][:3, :3].T + gt[a][:3, 3]
    T_b_world = se3_inv(gt[b])
    xyz_b = xyz_world @ T_b_world[:3, :3].T + T_b_world[:3, 3]
    uv_true = xyz_b[:, :2] / xyz_b[:, 2:] * [cam.fx, cam.fy] + [cam.cx, cam.cy]
    right = np.linalg.norm(uv_true - uv_b, axis=1) < 3.0  # the match is right
    return (fa.image, fb.image, se3_inv(gt[a]), T_b_world @ gt[a], xyz_world[right],
            uv_a[right], uv_b[right], uv_true[right], 1.2 ** kb.octave[ib][right], cam)


@pytest.fixture(scope="module")
def pair():  # type: ignore[no-untyped-def]
    return _matched_pair(0, 8)


def test_refined_matches_land_on_the_exact_correspondence(pair) -> None:  # type: ignore[no-untyped-def]
    img_a, img_b, T_a_world, T_b_a, xyz_world, uv_a, uv_b, uv_true, step, cam = pair
    out, ok = align_patches(img_a[None], np.zeros(1, np.int64), T_a_world[None], T_b_a[None],
                            np.zeros(len(uv_a), np.int64), xyz_world, uv_a, img_b, uv_b,
                            step, cam.fx, cam.fy, HALF, 10, 1.5, 0.5)
    assert ok.mean() > 0.8
    before = np.linalg.norm(uv_b[ok] - uv_true[ok], axis=1)
    after = np.linalg.norm(out[ok] - uv_true[ok], axis=1)
    assert np.median(before) > 0.4  # whole pixels of the keypoint's level
    assert np.median(after) < 0.08
    assert np.percentile(after, 90) < 0.3
    assert np.array_equal(out[~ok], uv_b[~ok])  # refused ones keep their position


def test_alignment_against_an_unrelated_image_is_refused(pair) -> None:  # type: ignore[no-untyped-def]
    img_a, img_b, T_a_world, T_b_a, xyz_world, uv_a, uv_b, _, step, cam = pair
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, img_b.shape, dtype=np.uint8)
    _, ok = align_patches(img_a[None], np.zeros(1, np.int64), T_a_world[None], T_b_a[None],
                          np.zeros(len(uv_a), np.int64), xyz_world, uv_a, noise, uv_b,
                          step, cam.fx, cam.fy, HALF, 10, 1.5, 0.5)
    assert ok.mean() < 0.1


def test_points_behind_a_camera_or_off_the_image_are_refused(pair) -> None:  # type: ignore[no-untyped-def]
    img_a, img_b, T_a_world, T_b_a, xyz_world, uv_a, uv_b, _, step, cam = pair
    n = 3
    behind = make_pose(np.diag([1.0, -1.0, -1.0]), np.zeros(3)) @ T_a_world
    edge = uv_b[:n].copy()
    edge[:, 0] = 1.0  # the patch would leave the image
    for T_ref, cur_uv in ((behind, uv_b[:n]), (T_a_world, edge)):
        out, ok = align_patches(img_a[None], np.zeros(1, np.int64), T_ref[None], T_b_a[None],
                                np.zeros(n, np.int64), xyz_world[:n], uv_a[:n], img_b, cur_uv,
                                step[:n], cam.fx, cam.fy, HALF, 10, 1.5, 0.5)
        assert not ok.any()
        assert np.array_equal(out, cur_uv)

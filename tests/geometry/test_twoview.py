"""Tests of slam.geometry.twoview on exact synthetic scenes and against OpenCV."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from slam.errors import GeometryError
from slam.geometry.epipolar import essential_8point, homography_dlt
from slam.geometry.lie import hat, make_pose, so3_exp
from slam.geometry.twoview import (
    TwoViewResult,
    decompose_essential,
    decompose_homography,
    initialize_two_view,
    recover_pose_from_essential,
    recover_pose_from_homography,
)
from tests.geometry.synthetic_scenes import (
    K_INV,
    PLANE_D,
    PLANE_N,
    T_PLANAR,
    K,
    Scene,
    direction_angle_deg,
    gt_essential,
    gt_homography,
    make_scene,
    normalised,
    planar_scene,
    rotation_angle_deg,
)

# ----------------------------------------------------------------------------- decompositions


def test_decompose_essential_contains_truth() -> None:
    sc = make_scene(np.random.default_rng(6), 20)
    T = sc.T_cam2_cam1
    t_unit = T[:3, 3] / np.linalg.norm(T[:3, 3])
    motions = decompose_essential(gt_essential(sc) * -3.0)
    assert len(motions) == 4
    for R, t in motions:
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(R) == pytest.approx(1.0)
        assert np.linalg.norm(t) == pytest.approx(1.0)
    hits = [np.allclose(R, T[:3, :3], atol=1e-9) and np.allclose(t, t_unit) for R, t in motions]
    assert sum(hits) == 1


def test_recover_pose_from_essential_vs_truth_and_opencv() -> None:
    sc = make_scene(np.random.default_rng(7), 200, noise_px=0.5)
    xn1, xn2 = normalised(sc.uv1), normalised(sc.uv2)
    E = essential_8point(xn1, xn2)
    rec = recover_pose_from_essential(E, xn1, xn2, focal_px=515.0)
    assert rec is not None
    T = sc.T_cam2_cam1
    assert rotation_angle_deg(rec.R, T[:3, :3]) < 0.3
    assert direction_angle_deg(rec.t, T[:3, 3]) < 2.0
    _, R_cv, t_cv, _ = cv2.recoverPose(E, sc.uv1, sc.uv2, K)
    assert rotation_angle_deg(rec.R, np.asarray(R_cv, dtype=np.float64)) < 1e-6
    assert direction_angle_deg(rec.t, np.asarray(t_cv, dtype=np.float64).ravel()) < 1e-6
    assert rec.good.mean() > 0.9
    scale = np.linalg.norm(T[:3, 3])  # points come out in units of the baseline
    err = np.linalg.norm(rec.xyz_cam1[rec.good] * scale - sc.xyz_world[rec.good], axis=1)
    assert np.median(err) < 0.1


@pytest.mark.parametrize("baseline", [0.02, 0.06])
def test_recover_pose_rejects_low_parallax(baseline: float) -> None:
    T = make_pose(so3_exp(np.radians([0.0, 2.0, 0.0])), np.array([baseline, 0.0, 0.0]))
    sc = make_scene(np.random.default_rng(8), 200, T_cam2_cam1=T)
    xn1, xn2 = normalised(sc.uv1), normalised(sc.uv2)
    E = hat(T[:3, 3]) @ T[:3, :3]
    assert recover_pose_from_essential(E, xn1, xn2, focal_px=515.0) is None
    rec = recover_pose_from_essential(E, xn1, xn2, focal_px=515.0, min_parallax_deg=0.3)
    if baseline < 0.05:  # most points below ~0.36 deg: the cheirality vote is ambiguous
        assert rec is None
    else:  # ~0.6 deg: accepted once the limit is lowered
        assert rec is not None
        assert rotation_angle_deg(rec.R, T[:3, :3]) < 1e-6
        assert 0.3 < rec.parallax_deg < 1.0


def test_decompose_and_recover_homography() -> None:
    sc = planar_scene(9)
    sols = decompose_homography(gt_homography(), K)
    R_gt, t_gt = T_PLANAR[:3, :3], T_PLANAR[:3, 3]
    match = [
        np.allclose(R, R_gt, atol=1e-8) and np.allclose(t, t_gt / PLANE_D, atol=1e-8)
        and np.allclose(n, PLANE_N, atol=1e-8)
        for R, t, n in sols
    ]  # fmt: skip
    assert sum(match) == 1
    rec = recover_pose_from_homography(
        K_INV @ gt_homography() @ K, normalised(sc.uv1), normalised(sc.uv2), focal_px=515.0
    )
    assert rec is not None
    np.testing.assert_allclose(rec.R, R_gt, atol=1e-8)
    np.testing.assert_allclose(rec.t, t_gt / PLANE_D, atol=1e-8)
    np.testing.assert_allclose(rec.xyz_cam1 * PLANE_D, sc.xyz_world, atol=1e-6)


def test_recover_pose_from_homography_ambiguous_returns_none() -> None:
    # Forward motion towards the plane: both physical decompositions put every point in
    # front of both cameras, so there is no clear winner.
    T = make_pose(so3_exp(np.radians([1.0, -3.0, 2.0])), np.array([0.0, 0.0, 0.6]))
    sc = make_scene(np.random.default_rng(16), 300, kind="planar", T_cam2_cam1=T)
    Hn = K_INV @ homography_dlt(sc.uv1, sc.uv2) @ K
    rec = recover_pose_from_homography(Hn, normalised(sc.uv1), normalised(sc.uv2), focal_px=515.0)
    assert rec is None


# ----------------------------------------------------------------------------- initialisation


def _check_init(sc: Scene, res: object, rot_tol: float, dir_tol: float, rel_tol: float) -> None:
    """Pose within ``rot_tol``/``dir_tol`` degrees, points within ``rel_tol`` of their depth."""
    assert isinstance(res, TwoViewResult)
    T = sc.T_cam2_cam1
    assert np.linalg.norm(res.T_cam2_cam1[:3, 3]) == pytest.approx(1.0)
    assert rotation_angle_deg(res.T_cam2_cam1[:3, :3], T[:3, :3]) < rot_tol
    assert direction_angle_deg(res.T_cam2_cam1[:3, 3], T[:3, 3]) < dir_tol
    assert res.good[~sc.outliers].mean() > 0.85
    assert (res.good & sc.outliers).sum() <= 3
    assert np.isnan(res.xyz_cam1[~res.good]).all()
    scale = np.linalg.norm(T[:3, 3])
    err = np.linalg.norm(res.xyz_cam1[res.good] * scale - sc.xyz_world[res.good], axis=1)
    assert np.median(err / sc.xyz_world[res.good, 2]) < rel_tol
    assert res.parallax_deg > 1.0


def test_initialize_general_scene_noise_free() -> None:
    sc = make_scene(np.random.default_rng(10), 300)
    res = initialize_two_view(sc.uv1, sc.uv2, K, np.random.default_rng(0))
    _check_init(sc, res, 1e-6, 1e-5, 1e-6)
    assert res is not None and res.model == "F"


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_initialize_general_scene_noise_and_outliers(seed: int) -> None:
    rng = np.random.default_rng(seed)
    sc = make_scene(rng, 300, noise_px=0.5, outlier_ratio=0.25)
    res = initialize_two_view(sc.uv1, sc.uv2, K, rng)
    _check_init(sc, res, 0.5, 3.0, 0.05)
    assert res is not None and res.model == "F"


def test_initialize_planar_scene() -> None:
    rng = np.random.default_rng(14)
    sc = planar_scene(14, noise_px=0.5, outlier_ratio=0.2)
    res = initialize_two_view(sc.uv1, sc.uv2, K, rng)
    _check_init(sc, res, 0.5, 3.0, 0.05)
    assert res is not None and res.model == "H"


def test_initialize_pure_rotation_fails() -> None:
    rng = np.random.default_rng(15)
    sc = make_scene(rng, 300, kind="rotation", noise_px=0.5)
    assert initialize_two_view(sc.uv1, sc.uv2, K, rng) is None


@pytest.mark.parametrize(
    "uv",
    [
        np.zeros((7, 2)) + np.arange(7)[:, None],  # too few
        np.full((20, 2), 100.0),  # all identical
        np.where(np.arange(40).reshape(20, 2) == 5, np.nan, np.arange(40.0).reshape(20, 2) ** 1.5),
    ],
)
def test_initialize_degenerate_input_raises(uv: np.ndarray) -> None:
    with pytest.raises(GeometryError):
        initialize_two_view(uv, uv + 1.0, K, np.random.default_rng(0))

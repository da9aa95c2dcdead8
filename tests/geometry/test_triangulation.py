"""Tests of slam.geometry.triangulation against exact synthetic scenes and OpenCV."""

from __future__ import annotations

import logging
import time

import cv2
import numpy as np
import pytest

from slam.errors import GeometryError
from slam.geometry.lie import make_pose, so3_exp
from slam.geometry.triangulation import (
    camera_center,
    in_front,
    parallax_deg,
    projection_matrix,
    reprojection_errors,
    triangulate_dlt,
    triangulate_points,
)
from tests.geometry.synthetic_scenes import K, make_scene, project

log = logging.getLogger(__name__)

T_CAM1_WORLD = make_pose(so3_exp(np.array([0.1, -0.2, 0.05])), np.array([0.3, -0.1, 1.0]))


def test_dlt_exact_noise_free() -> None:
    sc = make_scene(np.random.default_rng(0), 200, T_cam1_world=T_CAM1_WORLD)
    P1 = projection_matrix(K, sc.T_cam1_world)
    P2 = projection_matrix(K, sc.T_cam2_world)
    xyz = triangulate_dlt(P1, P2, sc.uv1, sc.uv2)
    np.testing.assert_allclose(xyz, sc.xyz_world, atol=1e-8)


def test_dlt_matches_opencv_with_noise() -> None:
    sc = make_scene(np.random.default_rng(1), 200, noise_px=0.5)
    P1 = projection_matrix(K, sc.T_cam1_world)
    P2 = projection_matrix(K, sc.T_cam2_world)
    xyz = triangulate_dlt(P1, P2, sc.uv1, sc.uv2)
    X = cv2.triangulatePoints(P1, P2, sc.uv1.T.copy(), sc.uv2.T.copy())
    xyz_cv = (X[:3] / X[3]).T
    # OpenCV solves the same linear system (without row equilibration).
    rel = np.linalg.norm(xyz - xyz_cv, axis=1) / np.linalg.norm(xyz_cv, axis=1)
    assert rel.max() < 3e-3
    assert np.median(np.linalg.norm(xyz - sc.xyz_world, axis=1)) < 0.1


def test_dlt_point_at_infinity_and_nan() -> None:
    P1 = projection_matrix(K, np.eye(4))
    P2 = projection_matrix(K, make_pose(np.eye(3), np.array([-0.5, 0.0, 0.0])))
    uv = np.array([[320.0, 240.0], [np.nan, 1.0]])
    xyz = triangulate_dlt(P1, P2, uv, uv)  # identical rays: point at infinity
    assert np.isnan(xyz).all()
    with pytest.raises(GeometryError):
        triangulate_dlt(P1, P2, uv[:, :1], uv)


def test_helpers_parallax_depth_reprojection() -> None:
    T1 = np.eye(4)
    T2 = make_pose(np.eye(3), np.array([-1.0, 0.0, 0.0]))  # camera 2 centre at x = 1
    xyz = np.array([[0.5, 0.0, 0.5], [0.0, 0.0, -2.0]])
    np.testing.assert_allclose(camera_center(T2), [1.0, 0.0, 0.0])
    np.testing.assert_allclose(parallax_deg(xyz[:1], camera_center(T1), camera_center(T2)), [90.0])
    np.testing.assert_array_equal(in_front(T1, xyz), [True, False])
    uv = project(T1, xyz[:1]) + np.array([[3.0, 4.0]])
    err = reprojection_errors(T1, K, xyz, np.vstack([uv, uv]))
    np.testing.assert_allclose(err[0], 5.0)
    assert np.isinf(err[1])


def test_triangulate_points_rejects_outliers_and_low_parallax() -> None:
    rng = np.random.default_rng(2)
    sc = make_scene(rng, 300, noise_px=0.5, outlier_ratio=0.25, T_cam1_world=T_CAM1_WORLD)
    xyz, valid = triangulate_points(sc.T_cam1_world, sc.T_cam2_world, K, sc.uv1, sc.uv2)
    assert valid.sum() > 0.9 * (~sc.outliers).sum()
    assert (valid & sc.outliers).sum() <= 2  # a few outliers fall on their epipolar line
    good = valid & ~sc.outliers
    assert np.median(np.linalg.norm(xyz[good] - sc.xyz_world[good], axis=1)) < 0.1
    # Parallax limit: only points with at least the limit survive, about half here.
    c1, c2 = camera_center(sc.T_cam1_world), camera_center(sc.T_cam2_world)
    limit = float(np.median(parallax_deg(sc.xyz_world, c1, c2)))
    xyz, valid = triangulate_points(
        sc.T_cam1_world, sc.T_cam2_world, K, sc.uv1, sc.uv2, min_parallax_deg=limit
    )
    assert (parallax_deg(xyz[valid], c1, c2) >= limit).all()
    assert 0.3 * len(valid) < valid.sum() < 0.6 * len(valid)


def test_triangulate_points_per_point_sigma_and_cheirality() -> None:
    rng = np.random.default_rng(3)
    sc = make_scene(rng, 100, noise_px=0.0)
    uv2 = sc.uv2.copy()
    uv2[:10, 1] += 8.0  # ~4 px off in each view: rejected at sigma 1, kept at sigma 4
    sigma = np.ones(100)
    sigma[5:10] = 4.0
    _, valid = triangulate_points(
        sc.T_cam1_world, sc.T_cam2_world, K, sc.uv1, uv2, sigma1=sigma, sigma2=sigma
    )
    assert not valid[:5].any()
    assert valid[5:].all()
    _, valid = triangulate_points(
        sc.T_cam1_world, sc.T_cam2_world, K, sc.uv1, uv2, sigma1=None, sigma2=None
    )
    assert valid.all()
    # Mirror the points through camera 1's centre: behind both cameras, still projectable.
    xyz_behind = -sc.xyz_world
    uv1b, uv2b = project(sc.T_cam1_world, xyz_behind), project(sc.T_cam2_world, xyz_behind)
    xyz, valid = triangulate_points(
        sc.T_cam1_world, sc.T_cam2_world, K, uv1b, uv2b, sigma1=None, sigma2=None
    )
    np.testing.assert_allclose(xyz, xyz_behind, atol=1e-6)
    assert not valid.any()


def test_triangulate_points_takes_a_thousand_points_at_once() -> None:
    sc = make_scene(np.random.default_rng(4), 1000, noise_px=0.5)
    triangulate_points(sc.T_cam1_world, sc.T_cam2_world, K, sc.uv1, sc.uv2)  # compiled
    t0 = time.perf_counter()
    xyz, valid = triangulate_points(sc.T_cam1_world, sc.T_cam2_world, K, sc.uv1, sc.uv2)
    # The time is logged, not asserted (it measures the machine); the benchmarks time it.
    log.info("triangulate_points: 1000 points in %.2f ms", 1e3 * (time.perf_counter() - t0))
    assert xyz.shape == (1000, 3) and valid.shape == (1000,) and valid.mean() > 0.9

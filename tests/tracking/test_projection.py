"""Projecting map points into a frame (frustum, scale and angle checks) and matching them."""

from __future__ import annotations

import cv2
import numpy as np

from slam.geometry.lie import make_pose, se3_inv, so3_exp
from slam.tracking.projection import match_projected, project_into
from tests.map.factories import (
    H_SMALL,
    K_SMALL,
    N_LEVELS,
    SCALE_FACTOR,
    W_SMALL,
    flip_bits,
    make_frame,
    random_descriptors,
)

T_CW = make_pose(so3_exp(np.array([0.05, -0.1, 0.02])), np.array([0.2, -0.1, 0.3]))


def _points_in_view(n: int, rng: np.random.Generator) -> np.ndarray:
    """World points (n, 3) inside the image of ``T_CW`` at depths 2-5 m."""
    uv = rng.uniform([5, 5], [W_SMALL - 5, H_SMALL - 5], size=(n, 2))
    z = rng.uniform(2.0, 5.0, n)
    xyz_cam = np.column_stack([(uv - K_SMALL[:2, 2]) / K_SMALL[0, 0] * z[:, None], z])
    T_wc = se3_inv(T_CW)
    return np.asarray(xyz_cam @ T_wc[:3, :3].T + T_wc[:3, 3], np.float64)


def test_projection_matches_opencv() -> None:
    rng = np.random.default_rng(0)
    xyz = _points_in_view(200, rng)
    frame = make_frame(np.zeros((0, 2)))
    proj = project_into(frame, T_CW, K_SMALL, xyz, None, None, None, SCALE_FACTOR, N_LEVELS)
    np.testing.assert_array_equal(proj.keep, np.arange(200))
    rvec, _ = cv2.Rodrigues(T_CW[:3, :3])
    uv_cv, _ = cv2.projectPoints(xyz, rvec, T_CW[:3, 3], K_SMALL, None)
    np.testing.assert_allclose(proj.uv, uv_cv.reshape(-1, 2), atol=1e-9)
    assert np.all(proj.level == 0) and np.all(proj.view_cos == 1.0)


def test_projection_drops_points_behind_or_outside() -> None:
    rng = np.random.default_rng(1)
    xyz = _points_in_view(4, rng)
    T_wc = se3_inv(T_CW)
    center = T_wc[:3, 3]
    behind = center - 2.0 * (xyz[0] - center)  # mirrored through the camera centre
    outside = T_wc[:3, :3] @ np.array([5.0, 0.0, 1.0]) + center  # far right of the image
    all_xyz = np.vstack([xyz, behind, outside, center])
    frame = make_frame(np.zeros((0, 2)))
    proj = project_into(frame, T_CW, K_SMALL, all_xyz, None, None, None, SCALE_FACTOR, N_LEVELS)
    assert proj.keep.tolist() == [0, 1, 2, 3]


def test_projection_scale_range_and_level() -> None:
    rng = np.random.default_rng(2)
    xyz = _points_in_view(300, rng)
    center = se3_inv(T_CW)[:3, 3]
    dist = np.linalg.norm(xyz - center, axis=1)
    dmax = dist * rng.uniform(0.5, 2.5, len(xyz))
    dmin = dmax / SCALE_FACTOR ** (N_LEVELS - 1)
    frame = make_frame(np.zeros((0, 2)))
    proj = project_into(frame, T_CW, K_SMALL, xyz, None, dmin, dmax, SCALE_FACTOR, N_LEVELS)
    inside = (dist >= 0.8 * dmin) & (dist <= 1.2 * dmax)
    np.testing.assert_array_equal(proj.keep, np.flatnonzero(inside))
    k = proj.keep
    level = np.clip(np.ceil(np.log(dmax[k] / dist[k]) / np.log(SCALE_FACTOR)), 0, N_LEVELS - 1)
    np.testing.assert_array_equal(proj.level, level)
    # A point at dmax / 1.2^3 (just under) is predicted at level 3.
    xyz3 = center + (xyz[0] - center) * (dmax[0] / SCALE_FACTOR**3 / dist[0])
    p3 = project_into(frame, T_CW, K_SMALL, xyz3[None], None, dmin[:1], dmax[:1] * 0.9999,
                      SCALE_FACTOR, N_LEVELS)
    assert p3.level.tolist() == [3]


def test_projection_viewing_angle() -> None:
    rng = np.random.default_rng(3)
    xyz = _points_in_view(3, rng)
    center = se3_inv(T_CW)[:3, 3]
    ray = (xyz - center) / np.linalg.norm(xyz - center, axis=1, keepdims=True)
    # Normals at 0, 55 and 65 degrees from the viewing ray.
    perp = np.cross(ray, [0.0, 0.0, 1.0])
    perp /= np.linalg.norm(perp, axis=1, keepdims=True)
    ang = np.radians([0.0, 55.0, 65.0])[:, None]
    normals = np.cos(ang) * ray + np.sin(ang) * perp
    frame = make_frame(np.zeros((0, 2)))
    proj = project_into(frame, T_CW, K_SMALL, xyz, normals, None, None, SCALE_FACTOR, N_LEVELS)
    assert proj.keep.tolist() == [0, 1]
    np.testing.assert_allclose(proj.view_cos, np.cos(ang[:2, 0]), atol=1e-12)


def test_match_projected_finds_keypoints_and_skips_taken_ones() -> None:
    rng = np.random.default_rng(4)
    n = 120
    xyz = _points_in_view(n, rng)
    pt_desc = random_descriptors(rng, n)
    # The frame sees the points 1 px off, in shuffled order, with slightly changed bits.
    uv_true = project_into(make_frame(np.zeros((0, 2))), T_CW, K_SMALL, xyz, None, None,
                           None, SCALE_FACTOR, N_LEVELS).uv
    perm = rng.permutation(n)
    frame = make_frame(uv_true[perm] + [1.0, -0.5], descriptors=flip_bits(pt_desc[perm], 8, rng))
    frame.point_ids[:10] = 999  # keypoints already associated
    # Five extra points behind the camera never reach the matcher.
    center = se3_inv(T_CW)[:3, 3]
    xyz_in = np.vstack([xyz, 2.0 * center - xyz[:5]])
    desc_in = np.vstack([pt_desc, pt_desc[:5]])
    proj = project_into(frame, T_CW, K_SMALL, xyz_in, None, None, None, SCALE_FACTOR, N_LEVELS)
    sel, kp = match_projected(frame, proj, desc_in, np.full(len(proj.keep), 4.0), 100, 0.9)
    assert np.all(kp >= 10)
    np.testing.assert_array_equal(perm[kp], sel)
    assert len(sel) == n - 10

"""Renderer against analytic geometry, multi-view and stereo consistency, and ORB richness."""

from __future__ import annotations

import logging
import time

import cv2
import numpy as np
import pytest

from slam.camera.pinhole import PinholeCamera
from slam.geometry.lie import make_pose, se3_inv, so3_exp, transform_points
from slam.synthetic.render import render, render_stereo
from slam.synthetic.scene import Scene, build_room_scene, room_scene, textured_quad
from slam.synthetic.trajectories import (
    camera_rotation,
    forward_trajectory,
    loop_trajectory,
    sideways_trajectory,
)

log = logging.getLogger(__name__)
CAM = PinholeCamera(500.0, 500.0, 319.5, 239.5, 640, 480)
HALF = 5  # patches are 11 x 11


def _pixel_grid(cam: PinholeCamera) -> np.ndarray:
    u, v = np.meshgrid(np.arange(cam.width, dtype=np.float64), np.arange(cam.height))
    return np.stack([u.ravel(), v.ravel()], axis=1)


def _analytic_plane_depth(T_world_cam: np.ndarray, origin, axis_u, axis_v, size_u, size_v):
    """Float64 z-depth (H, W) of the plane hit per pixel, NaN outside the rectangle."""
    uv = _pixel_grid(CAM)
    d_cam = np.c_[CAM.bearings(uv), np.ones(len(uv))]
    R, C = T_world_cam[:3, :3], T_world_cam[:3, 3]
    d_world = d_cam @ R.T
    n = np.cross(axis_u, axis_v)
    z = (n @ (origin - C)) / (d_world @ n)
    hit = C + z[:, None] * d_world - origin
    s, t = hit @ axis_u, hit @ axis_v
    inside = (z > 0) & (s > 1e-3) & (t > 1e-3) & (s < size_u - 1e-3) & (t < size_v - 1e-3)
    return np.where(inside, z, np.nan).reshape(CAM.height, CAM.width)


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64) - a.mean()
    b = b.astype(np.float64) - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else 0.0


def _textured(img: np.ndarray, min_std: float = 4.0) -> np.ndarray:
    """Mask (H, W) of pixels whose 11 x 11 patch is not flat (NCC is defined there)."""
    f = img.astype(np.float32)
    k = (2 * HALF + 1, 2 * HALF + 1)
    var = cv2.boxFilter(f * f, -1, k) - cv2.boxFilter(f, -1, k) ** 2
    return var > min_std**2


def _patch(img: np.ndarray, u: int, v: int) -> np.ndarray:
    return img[v - HALF:v + HALF + 1, u - HALF:u + HALF + 1]


def test_depth_of_tilted_plane_matches_analytic() -> None:
    rng = np.random.default_rng(3)
    R_plane = so3_exp(np.array([0.3, -0.5, 0.2]))
    axis_u, axis_v = R_plane[:, 0], R_plane[:, 1]
    origin = np.array([-1.5, -1.0, 3.0])
    quad = textured_quad(origin, 3.0 * axis_u, 2.0 * axis_v, rng, metres_per_texel=0.01)
    if quad.normal @ (np.zeros(3) - origin) < 0:  # make it face the camera
        quad = textured_quad(origin, 2.0 * axis_v, 3.0 * axis_u, rng, metres_per_texel=0.01)
    scene = Scene((quad,), np.full(3, -10.0), np.full(3, 10.0))
    T_world_cam = make_pose(so3_exp(np.array([0.05, 0.1, -0.08])), np.array([0.2, -0.1, 0.3]))
    _, depth = render(scene, CAM, T_world_cam)
    z_true = _analytic_plane_depth(T_world_cam, quad.origin, quad.axis_u, quad.axis_v,
                                   quad.size_u_m, quad.size_v_m)
    inside = np.isfinite(z_true)
    assert 0.2 < inside.mean() < 0.95  # the rectangle's edges are in view
    assert np.max(np.abs(depth[inside] - z_true[inside])) < 1e-4
    # pixels clearly outside the rectangle get no hit (depth 0)
    z_out = _analytic_plane_depth(T_world_cam, quad.origin - 0.01 * (quad.axis_u + quad.axis_v),
                                  quad.axis_u, quad.axis_v, quad.size_u_m + 0.02,
                                  quad.size_v_m + 0.02)
    assert np.all(depth[~np.isfinite(z_out)] == 0.0)


def test_room_wall_depth_and_back_face_culling() -> None:
    scene = room_scene(0)
    # at (5, 3, 1.5) looking along +x: only the wall x = 8 is in view, 3 m ahead
    T_world_cam = make_pose(camera_rotation(0.0), np.array([5.0, 3.0, 1.5]))
    _, depth = render(scene, CAM, T_world_cam)
    np.testing.assert_allclose(depth, 3.0, atol=1e-4)
    # tilt and turn: floor and wall x = 8 in view; check pixels on the floor
    T_world_cam = make_pose(camera_rotation(0.3, -0.5, 0.1), np.array([4.5, 3.2, 1.6]))
    _, depth = render(scene, CAM, T_world_cam)
    z_floor = _analytic_plane_depth(T_world_cam, np.zeros(3), np.array([0.0, 1.0, 0.0]),
                                    np.array([1.0, 0.0, 0.0]), 6.0, 8.0)
    xyz_cam = CAM.unproject(_pixel_grid(CAM), depth.ravel().astype(np.float64))
    xyz_world = transform_points(T_world_cam, xyz_cam)
    on_floor = (np.abs(xyz_world[:, 2]) < 2e-5).reshape(depth.shape)
    on_floor &= np.isfinite(z_floor)  # not within 1 mm of the floor's edges
    assert on_floor.mean() > 0.3
    assert np.max(np.abs(depth[on_floor] - z_floor[on_floor])) < 1e-4


def test_nearer_quad_occludes() -> None:
    rng = np.random.default_rng(0)
    # axes (y, x): normals -z, facing a camera at the origin that looks along +z
    far = textured_quad(np.array([-3.0, -3.0, 4.0]), [0, 6.0, 0], [6.0, 0, 0], rng, 0.02)
    near = textured_quad(np.array([0.0, -3.0, 2.0]), [0, 6.0, 0], [3.0, 0, 0], rng, 0.02)
    scene = Scene((far, near), np.full(3, -10.0), np.full(3, 10.0))
    _, depth = render(scene, CAM, np.eye(4))
    assert np.all(depth[:, 325:] == pytest.approx(2.0, abs=1e-5))
    assert np.all(depth[:, :315] == pytest.approx(4.0, abs=1e-5))
    # seen from behind (back faces) nothing is drawn
    looking_down_z = np.diag([1.0, -1.0, -1.0])
    _, depth_back = render(scene, CAM, make_pose(looking_down_z, np.array([0, 0, 8.0])))
    assert np.all(depth_back == 0)


def _warp_b_into_a(img_b, depth_a, T_a, T_b):
    """Image B resampled at the reprojection of every A pixel, and a visibility mask."""
    xyz_a = CAM.unproject(_pixel_grid(CAM), depth_a.ravel().astype(np.float64))
    xyz_b = transform_points(se3_inv(T_b) @ T_a, xyz_a)
    uv_b = CAM.project(xyz_b)
    maps = uv_b.reshape(CAM.height, CAM.width, 2).astype(np.float32)
    warped = cv2.remap(img_b, maps[..., 0], maps[..., 1], cv2.INTER_LINEAR)
    return warped, uv_b, xyz_b[:, 2]


def _reprojection_ncc(scene, T_a, T_b, T_b_assumed=None, n_samples=300, seed=0):
    """NCC of A patches with B warped into A through A's depth and ``T_b_assumed``."""
    img_a, depth_a = render(scene, CAM, T_a)
    img_b, depth_b = render(scene, CAM, T_b)
    T_b_assumed = T_b if T_b_assumed is None else T_b_assumed
    warped, uv_b, z_b = _warp_b_into_a(img_b, depth_a, T_a, T_b_assumed)
    iu = np.clip(np.round(uv_b[:, 0]).astype(int), 0, CAM.width - 1)
    iv = np.clip(np.round(uv_b[:, 1]).astype(int), 0, CAM.height - 1)
    visible = (CAM.in_image(uv_b, margin=2) & (np.abs(depth_b[iv, iu] - z_b) < 0.02 * z_b))
    # whole patch visible and on one smooth surface
    visible = visible.reshape(depth_a.shape).astype(np.uint8)
    visible = cv2.erode(visible, np.ones((2 * HALF + 1, 2 * HALF + 1), np.uint8)) > 0
    visible &= _textured(img_a)
    vs, us = np.nonzero(visible)
    keep = (us >= HALF) & (vs >= HALF) & (us < CAM.width - HALF) & (vs < CAM.height - HALF)
    pick = np.random.default_rng(seed).choice(np.count_nonzero(keep), n_samples, replace=False)
    return np.array([_ncc(_patch(img_a, u, v), _patch(warped, u, v))
                     for u, v in zip(us[keep][pick], vs[keep][pick])])


def test_reprojection_consistency_between_frames() -> None:
    scene = room_scene(0)
    traj = loop_trajectory(300)
    T_a, T_b = traj.T_world_cam[40], traj.T_world_cam[46]  # ~12 cm and ~8 deg apart
    ncc = _reprojection_ncc(scene, T_a, T_b)
    assert np.median(ncc) > 0.97
    assert np.mean(ncc > 0.9) > 0.95
    # control: warping with a pose of B that is 5 cm off destroys the agreement
    T_b_wrong = T_b @ make_pose(np.eye(3), np.array([0.05, 0.0, 0.0]))
    ncc_wrong = _reprojection_ncc(scene, T_a, T_b, T_b_assumed=T_b_wrong)
    assert np.mean(ncc_wrong > 0.9) < 0.3


def test_stereo_disparity_is_fx_b_over_z() -> None:
    scene = room_scene(0)
    baseline = 0.1
    T_world_cam = sideways_trajectory(90).T_world_cam[20]
    left, right, depth = render_stereo(scene, CAM, baseline, T_world_cam)
    T_world_right = T_world_cam @ make_pose(np.eye(3), np.array([baseline, 0, 0]))
    _, depth_right = render(scene, CAM, T_world_right)
    disp_true = CAM.fx * baseline / depth
    assert disp_true.max() < 60
    # the right depth map is the left one shifted by the disparity
    rng = np.random.default_rng(1)
    vs = rng.integers(HALF, CAM.height - HALF, 400)
    us = rng.integers(70, CAM.width - HALF, 400)
    ur = np.round(us - disp_true[vs, us]).astype(int)
    same = np.abs(depth_right[vs, ur] - depth[vs, us]) < 0.01
    assert same.mean() > 0.9
    same &= _textured(left)[vs, us]
    # patches match at the true disparity (sub-pixel), and not 2 px off
    ncc_true: list[float] = []
    ncc_off: list[float] = []
    for u, v in zip(us[same], vs[same]):
        pl = _patch(left, u, v).astype(np.float32)
        for d, out in ((disp_true[v, u], ncc_true), (disp_true[v, u] + 2.0, ncc_off)):
            pr = cv2.getRectSubPix(right, (2 * HALF + 1, 2 * HALF + 1), (float(u - d), float(v)))
            out.append(_ncc(pl, pr))
    assert np.median(ncc_true) > 0.97 and np.mean(np.array(ncc_true) > 0.9) > 0.9
    assert np.median(ncc_off) < 0.8
    # OpenCV's semi-global matcher agrees with fx * b / z
    sgbm = cv2.StereoSGBM.create(minDisparity=0, numDisparities=64, blockSize=7,
                                 P1=8 * 49, P2=32 * 49, uniquenessRatio=10)
    disp = sgbm.compute(left, right).astype(np.float32) / 16.0
    valid = disp[:, 80:] > 0
    err = np.abs(disp[:, 80:] - disp_true[:, 80:])[valid]
    assert valid.mean() > 0.7
    assert np.median(err) < 0.3 and np.mean(err < 1.0) > 0.9


@pytest.mark.parametrize("make", [loop_trajectory, forward_trajectory, sideways_trajectory])
def test_orb_finds_many_well_spread_keypoints(make) -> None:
    scene = room_scene(0)
    traj = make()
    orb = cv2.ORB.create(nfeatures=2000)
    for k in (0, len(traj) // 2, len(traj) - 1):
        image, depth = render(scene, CAM, traj.T_world_cam[k])
        assert np.all(depth > 0)  # the room is watertight: every ray hits a surface
        kps = orb.detect(image, None)
        uv = np.array([kp.pt for kp in kps])
        cells = set(zip((uv[:, 0] // 80).astype(int), (uv[:, 1] // 80).astype(int)))
        assert len(kps) >= 800, f"frame {k}: {len(kps)} keypoints"
        assert len(cells) >= 0.8 * 48, f"frame {k}: keypoints in {len(cells)} of 48 cells"


def test_same_seed_same_images_and_timing() -> None:
    scene_a, scene_b = build_room_scene(5), build_room_scene(5)
    T_world_cam = loop_trajectory(300).T_world_cam[123]
    img_a, depth_a = render(scene_a, CAM, T_world_cam)
    img_b, depth_b = render(scene_b, CAM, T_world_cam)
    np.testing.assert_array_equal(img_a, img_b)
    np.testing.assert_array_equal(depth_a, depth_b)
    img_other, depth_other = render(room_scene(0), CAM, T_world_cam)
    np.testing.assert_array_equal(depth_a, depth_other)  # same geometry
    assert np.mean(img_other != img_a) > 0.5  # different textures
    noisy = [render(scene_a, CAM, T_world_cam, noise_sigma=3.0, blur_sigma=0.8, noise_seed=s)[0]
             for s in (1, 1, 2)]
    np.testing.assert_array_equal(noisy[0], noisy[1])
    assert np.any(noisy[0] != noisy[2])
    assert 1.0 < np.std(noisy[0].astype(float) - img_a) < 20.0
    t0 = time.perf_counter()
    n = 10
    for k in range(n):
        render(scene_a, CAM, T_world_cam @ make_pose(np.eye(3), np.array([0.01 * k, 0, 0])))
    log.info("render 640x480: %.1f ms per frame", 1000 * (time.perf_counter() - t0) / n)

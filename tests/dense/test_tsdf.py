"""TSDF fusion: mesh vertices on the true surfaces of the synthetic room."""

from __future__ import annotations

import logging
import sys
from dataclasses import replace
from types import ModuleType

import cv2
import numpy as np
import pytest

from slam.camera.pinhole import PinholeCamera
from slam.dense import INSTALL_HINT, NoDepthError, Open3DMissingError, require_open3d
from slam.dense.export import fuse_map
from slam.dense.tsdf import KeyframePixels, Mesh, TsdfParams, TsdfVolume, stereo_depth
from slam.synthetic.accuracy import surface_error
from slam.synthetic.render import render_stereo
from slam.synthetic.source import STEREO_BASELINE_M, make_synthetic_source
from tests.dense.helpers import depth_map

log = logging.getLogger(__name__)


def test_true_poses_give_a_mesh_on_the_true_surfaces(o3d: ModuleType) -> None:
    """Acceptance: median distance of the vertices to the room's quads <= 1 cm, p95 <= 3 cm."""
    m, calib, scene = depth_map()
    volume = fuse_map(m, calib, TsdfParams(voxel_m=0.01))
    mesh = volume.mesh()
    err = surface_error(mesh.vertices[::4], scene.quads)
    log.warning("synthetic forward RGB-D, true poses, 1 cm voxels: %s", err)
    assert volume.n_views == 15 and err.n > 50_000 // 4
    assert err.median_m <= 0.01 and err.p95_m <= 0.03
    assert mesh.triangles.max() < len(mesh.vertices) and mesh.colors.shape == mesh.vertices.shape
    np.testing.assert_allclose(np.linalg.norm(mesh.normals, axis=1), 1.0, atol=1e-3)


def test_a_wrong_pose_moves_the_mesh_off_the_surfaces(o3d: ModuleType) -> None:
    """The accuracy test can fail: shifting every pose by 5 cm puts the vertices ~5 cm off."""
    m, calib, scene = depth_map(step=30)
    shift = np.eye(4)
    shift[:3, 3] = [0.05, 0.05, 0.05]
    for kf in m.keyframes.values():
        kf.T_cam_world = kf.T_cam_world @ shift
    err = surface_error(fuse_map(m, calib).mesh().vertices[::4], scene.quads)
    assert err.median_m > 0.02, err


def test_depth_outside_the_range_is_ignored(o3d: ModuleType) -> None:
    m, calib, _ = depth_map(step=30)
    mesh = fuse_map(m, calib, TsdfParams(depth_max_m=3.5, min_weight=1.0)).mesh()
    with m.lock:
        centres = np.array([kf.center_world for kf in m.keyframes.values()])
    nearest = np.min(np.linalg.norm(mesh.vertices[:, None] - centres[None], axis=2), axis=1)
    far = 3.5 * np.sqrt(1 + (160 / 250) ** 2 + (120 / 250) ** 2)  # corner ray at z = 3.5 m
    assert len(mesh.vertices) > 1000 and nearest.max() <= far + 0.05


def test_a_distorted_camera_is_undistorted_before_fusion(o3d: ModuleType) -> None:
    """Depth images as a distorted camera would see them fuse onto the true surfaces when
    the camera's distortion is known (and off them when it is ignored)."""
    m, calib, scene = depth_map(step=30)
    cam = replace(calib.camera, dist=(-0.25, 0.08, 0.0, 0.0, 0.0))
    uu, vv = np.meshgrid(np.arange(cam.width, dtype=np.float64),
                         np.arange(cam.height, dtype=np.float64))
    ideal = cam.undistort_points(np.stack([uu.ravel(), vv.ravel()], 1))
    mx = ideal[:, 0].reshape(uu.shape).astype(np.float32)
    my = ideal[:, 1].reshape(uu.shape).astype(np.float32)
    for kf in m.keyframes.values():  # pixel (u, v) of the distorted image shows ideal[u, v]
        assert kf.frame.depth_image is not None and kf.frame.image is not None
        kf.frame.depth_image = cv2.remap(kf.frame.depth_image, mx, my, cv2.INTER_NEAREST)
        kf.frame.image = cv2.remap(kf.frame.image, mx, my, cv2.INTER_LINEAR)
    good = surface_error(fuse_map(m, replace(calib, camera=cam)).mesh().vertices[::4], scene.quads)
    naive = surface_error(fuse_map(m, calib).mesh().vertices[::4], scene.quads)
    log.warning("distorted depth: undistorted %s; distortion ignored %s", good, naive)
    assert good.median_m <= 0.01 and good.p95_m <= 0.03
    assert naive.p95_m > 2 * good.p95_m


def test_stereo_depth_matches_the_rendered_depth() -> None:
    """Semi-global matching on the 640x480 synthetic pair (walls 3-5.5 m away, 10 cm
    baseline: 9-17 px disparity): most pixels, about 1 % relative error."""
    src = make_synthetic_source("forward", "stereo", n_frames=10)
    assert src.calibration is not None and src.calibration.stereo_bf is not None
    left, right, truth = render_stereo(src.scene, src.calibration.camera, STEREO_BASELINE_M,
                                       src.ground_truth().T_world_cam[0])
    depth = stereo_depth(left, right, src.calibration.stereo_bf)
    ok = (depth > 0) & (truth > 0)
    rel = np.abs(depth[ok] - truth[ok]) / truth[ok]
    log.warning("SGBM on synthetic stereo: %.0f %% of pixels, median rel. error %.2f %%",
                100 * ok.mean(), 100 * np.median(rel))
    assert ok.mean() > 0.7 and np.median(rel) < 0.02 and np.percentile(rel, 90) < 0.05
    with pytest.raises(ValueError, match="two"):
        stereo_depth(left, right[:, :-1], 25.0)


def test_stereo_keyframes_give_a_mesh(o3d: ModuleType) -> None:
    """Stereo keyframes fuse from their disparity; at 2-4 m with a 10 cm baseline the
    depth is good to about 1 % (see above), so the mesh is good to a few cm."""
    m, calib, scene = depth_map("sideways", "stereo", n_frames=90, step=30, width=640,
                                height=480)
    err = surface_error(fuse_map(m, calib, TsdfParams(depth_max_m=6.0)).mesh().vertices[::4],
                        scene.quads)
    log.warning("synthetic sideways stereo (SGBM), true poses: %s", err)
    assert err.n > 2_000 and err.median_m <= 0.03 and err.p95_m <= 0.08


def test_keyframe_pixels() -> None:
    bgr = np.zeros((4, 5, 3), np.uint8)
    bgr[..., 0] = 200  # blue
    px = KeyframePixels(3, color=bgr)
    rgb = px.rgb()
    assert rgb is not None and rgb[0, 0].tolist() == [0, 0, 200]
    assert not px.has_depth
    with pytest.raises(NoDepthError, match="keyframe 3"):
        px.depth(25.0)
    grey = np.full((4, 5), 7, np.uint8)
    stereo = KeyframePixels(4, image=grey, right_image=grey)
    assert stereo.has_depth and stereo.rgb() is not None and stereo.rgb()[1, 1].tolist() == [7] * 3
    with pytest.raises(NoDepthError, match="baseline"):
        stereo.depth(None)
    d = np.ones((4, 5), np.float32)
    assert KeyframePixels(5, depth_image=d).depth(None) is d


def test_mesh_round_trips_through_open3d(o3d: ModuleType) -> None:
    box = o3d.geometry.TriangleMesh.create_box(0.5, 1.0, 2.0)
    box.compute_vertex_normals()
    box.paint_uniform_color([0.2, 0.4, 0.6])
    mesh = Mesh.from_open3d(box)
    again = mesh.to_open3d()
    np.testing.assert_array_equal(np.asarray(again.vertices), np.asarray(box.vertices))
    np.testing.assert_array_equal(np.asarray(again.triangles), np.asarray(box.triangles))
    np.testing.assert_allclose(mesh.colors, [[0.2, 0.4, 0.6]] * 8)


def test_an_empty_volume_has_an_empty_mesh(o3d: ModuleType) -> None:
    volume = TsdfVolume(PinholeCamera(100.0, 100.0, 31.5, 23.5, 64, 48))
    mesh = volume.mesh()
    assert mesh.vertices.shape == (0, 3) and mesh.triangles.shape == (0, 3)
    with pytest.raises(ValueError, match="does not match"):
        volume.prepare(np.ones((10, 10), np.float32), None)
    too_far = np.full((48, 64), 9.0, np.float32)  # beyond depth_max_m: nothing to fuse
    assert not volume.integrate(*volume.prepare(too_far, None), np.eye(4))
    assert volume.n_views == 0


def test_without_open3d_the_error_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "open3d", None)  # import open3d raises ImportError
    with pytest.raises(Open3DMissingError) as err:
        require_open3d("--mesh")
    assert "--mesh needs Open3D" in str(err.value) and INSTALL_HINT in str(err.value)
    assert "libusb-1.0-0" in INSTALL_HINT and err.value.exit_code == 10
    with pytest.raises(Open3DMissingError):
        TsdfVolume(PinholeCamera(100.0, 100.0, 31.5, 23.5, 64, 48))

"""Map export: sparse points with colours and normals, meshes, the clear 'no depth' error."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from slam.camera.pinhole import Calibration, PinholeCamera
from slam.dense import NoDepthError
from slam.dense.export import (
    SparseCloud,
    export_mesh,
    export_points,
    filter_cloud,
    find_map_file,
    sparse_cloud,
    write_points_ply,
)
from slam.errors import MapFileError
from slam.geometry.lie import make_pose, se3_inv, so3_exp
from slam.map.map import Map
from slam.map.persistence import load_map, save_map
from slam.synthetic.accuracy import surface_error
from tests.dense.helpers import depth_map
from tests.map.factories import make_frame, make_keyframe

V1_FILE = Path(__file__).parents[1] / "map" / "data" / "v1_rgbd.map"
CAM = PinholeCamera(200.0, 200.0, 79.5, 59.5, 160, 120, dist=(0.1, -0.05, 0.0, 0.0, 0.0))


def _colour_coded_image(cam: PinholeCamera) -> np.ndarray:
    """BGR image whose pixel (u, v) is (blue 0, green v, red u) (u, v < 256)."""
    vv, uu = np.mgrid[0: cam.height, 0: cam.width]
    return np.stack([np.zeros_like(uu), vv, uu], -1).astype(np.uint8)


def _map_with_points(rng: np.random.Generator) -> tuple[Map, np.ndarray, np.ndarray]:
    """Two keyframes (the first with a colour image) seeing 40 points; returns the map,
    the points' world coordinates and the first keyframe's pose."""
    m = Map()
    T0 = np.asarray(se3_inv(make_pose(so3_exp(np.array([0.1, -0.2, 0.05])),
                                      np.array([0.3, -0.1, 0.2]))))
    T1 = T0.copy()
    T1[0, 3] -= 0.2
    xyz_cam = np.column_stack([rng.uniform(-0.8, 0.8, 40), rng.uniform(-0.6, 0.6, 40),
                               rng.uniform(2.0, 3.0, 40)])
    xyz_world = (xyz_cam - T0[:3, 3]) @ T0[:3, :3]
    kfs = []
    for T in (T0, T1):
        frame = make_frame(np.zeros((40, 2)), width=CAM.width, height=CAM.height)
        kfs.append(make_keyframe(m, frame, T))
    kfs[0].frame.color = _colour_coded_image(CAM)
    for j, p in enumerate(xyz_world):
        mp = m.add_point(p, kfs[0], j)
        m.add_observation(mp.id, kfs[1].id, j)
    m.update_normals_and_depths(list(m.points))
    return m, xyz_world, T0


def test_points_carry_the_colour_their_keyframe_saw_and_normals_to_the_cameras() -> None:
    m, xyz_world, T0 = _map_with_points(np.random.default_rng(2))
    cloud = sparse_cloud(m, CAM)
    np.testing.assert_array_equal(cloud.xyz, xyz_world)
    uv = CAM.project_distorted(xyz_world @ T0[:3, :3].T + T0[:3, 3])  # raw pixel of the image
    col, row = np.rint(uv[:, 0]).astype(int), np.rint(uv[:, 1]).astype(int)
    inside = (col >= 0) & (row >= 0) & (col < CAM.width) & (row < CAM.height)
    assert inside.sum() > 20
    np.testing.assert_array_equal(cloud.rgb[inside], np.column_stack(
        [col[inside], row[inside], np.zeros(inside.sum(), int)]))
    np.testing.assert_array_equal(cloud.rgb[~inside], 128)
    with m.lock:
        centres = np.array([kf.center_world for kf in m.keyframes.values()])
    to_cams = centres.mean(axis=0) - xyz_world
    cos = np.sum(cloud.normals * to_cams, axis=1) / np.linalg.norm(to_cams, axis=1)
    assert np.all(cos > 0.99)
    np.testing.assert_allclose(np.linalg.norm(cloud.normals, axis=1), 1.0)


def test_points_without_any_image_are_grey() -> None:
    m, _, _ = _map_with_points(np.random.default_rng(3))
    m.keyframes[0].frame.color = None
    assert np.all(sparse_cloud(m, CAM).rgb == 128)


def test_the_ply_reads_back_in_open3d(o3d: ModuleType, tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    normals = rng.normal(size=(50, 3))
    cloud = SparseCloud(rng.uniform(-5, 5, (50, 3)), rng.integers(0, 256, (50, 3), np.uint8),
                        normals / np.linalg.norm(normals, axis=1, keepdims=True))
    write_points_ply(tmp_path / "p.ply", cloud)
    pc = o3d.io.read_point_cloud(str(tmp_path / "p.ply"))
    np.testing.assert_allclose(np.asarray(pc.points), cloud.xyz, atol=1e-5)
    np.testing.assert_allclose(np.asarray(pc.normals), cloud.normals, atol=1e-6)
    np.testing.assert_allclose(np.asarray(pc.colors) * 255, cloud.rgb, atol=1e-3)


def test_outliers_are_removed_and_voxels_merge_points(o3d: ModuleType) -> None:
    rng = np.random.default_rng(5)
    xyz = np.vstack([rng.uniform(0, 1, (500, 3)), [[20.0, 20.0, 20.0]]])
    n = len(xyz)
    cloud = SparseCloud(xyz, np.full((n, 3), 100, np.uint8), np.tile([0.0, 0.0, 1.0], (n, 1)))
    clean = filter_cloud(cloud)
    assert len(clean) <= 500 and not np.any(np.all(clean.xyz == 20.0, axis=1))
    coarse = filter_cloud(cloud, voxel_m=0.25, remove_outliers=False)
    assert 4**3 <= len(coarse) <= 5**3 + 1  # Open3D's grid starts half a voxel below
    assert np.any(np.all(np.isclose(coarse.xyz, 20.0), axis=1))
    np.testing.assert_array_equal(coarse.rgb, 100)


def test_export_points_writes_every_point_when_asked_not_to_clean(
    o3d: ModuleType, tmp_path: Path
) -> None:
    m, _, _ = _map_with_points(np.random.default_rng(6))
    assert export_points(m, CAM, tmp_path / "p.ply", clean=False) == 40
    assert len(o3d.io.read_point_cloud(str(tmp_path / "p.ply")).points) == 40


def test_export_mesh_writes_a_mesh_on_the_surfaces_and_a_picture(
    o3d: ModuleType, tmp_path: Path
) -> None:
    """A map file saved with depth keyframes (format 2) exports a mesh that Open3D reads,
    on the true surfaces, and a PNG beside it."""
    m, calib, scene = depth_map(step=30)
    save_map(tmp_path / "run.map", m, calib, "rgbd")
    loaded = load_map(find_map_file(tmp_path))
    report = export_mesh(loaded.map, loaded.calibration, tmp_path / "mesh.ply")
    mesh = o3d.io.read_triangle_mesh(str(tmp_path / "mesh.ply"))
    assert len(mesh.triangles) == report.n_triangles > 10_000 and report.n_keyframes == 5
    assert mesh.has_vertex_colors() and mesh.has_vertex_normals()
    err = surface_error(np.asarray(mesh.vertices)[::4], scene.quads)
    assert err.median_m <= 0.01 and err.p95_m <= 0.03, err
    assert report.png == tmp_path / "mesh.png" and report.png.stat().st_size > 10_000


@pytest.mark.parametrize("case", ["mono", "v1"])
def test_a_map_without_depth_keyframes_says_so(
    o3d: ModuleType, tmp_path: Path, case: str
) -> None:
    if case == "v1":
        loaded = load_map(V1_FILE)
        m, calib = loaded.map, loaded.calibration
    else:
        m, _, _ = _map_with_points(np.random.default_rng(7))
        calib = Calibration(CAM)
    with pytest.raises(NoDepthError) as err:
        export_mesh(m, calib, tmp_path / "mesh.ply", what="map file X")
    msg = str(err.value)
    assert "map file X has no keyframe with a depth image" in msg and "--save-map" in msg
    assert err.value.exit_code == 10 and not (tmp_path / "mesh.ply").exists()


def test_find_map_file(tmp_path: Path) -> None:
    assert find_map_file(tmp_path / "a.map") == tmp_path / "a.map"
    with pytest.raises(MapFileError, match="found none"):
        find_map_file(tmp_path)
    (tmp_path / "run.map").write_bytes(b"x")
    assert find_map_file(tmp_path) == tmp_path / "run.map"
    (tmp_path / "other.map").write_bytes(b"x")
    with pytest.raises(MapFileError, match=r"other\.map, run\.map"):
        find_map_file(tmp_path)

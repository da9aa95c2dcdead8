"""Map export: the sparse map points as a PLY point cloud, the TSDF mesh of the depth
keyframes as a PLY mesh.

Sparse points carry the colour their reference keyframe saw and a normal pointing
from the point towards the cameras that observed it (the negated mean viewing
direction). They are written by a small PLY writer of our own, so this works
without Open3D; with Open3D they are first cleaned by statistical outlier removal
and, on request, voxel down-sampling. Meshes need Open3D.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from slam.camera.pinhole import Calibration, PinholeCamera
from slam.dense import NoDepthError, open3d_available, require_open3d
from slam.dense.tsdf import KeyframePixels, Mesh, TsdfParams, TsdfVolume
from slam.errors import MapFileError
from slam.map.map import Map

log = logging.getLogger(__name__)
Array = NDArray[np.float64]
_GREY = 128


@dataclass
class SparseCloud:
    """``xyz`` (N, 3) metres (world), ``rgb`` (N, 3) uint8, ``normals`` (N, 3) unit."""

    xyz: Array
    rgb: NDArray[np.uint8]
    normals: Array

    def __len__(self) -> int:
        return len(self.xyz)


def find_map_file(path: str | Path) -> Path:
    """``path`` itself, or the one ``*.map`` file in the folder ``path`` (a run's output
    folder); :class:`MapFileError` when there is none or several."""
    path = Path(path)
    if not path.is_dir():
        return path
    maps = sorted(path.glob("*.map"))
    if len(maps) != 1:
        found = ", ".join(p.name for p in maps) or "none"
        raise MapFileError(f"{path} is a folder: expected exactly one .map file in it "
                           f"(found {found}); pass the map file itself")
    return maps[0]


# --- sparse points ------------------------------------------------------------------------
def sparse_cloud(slam_map: Map, camera: PinholeCamera) -> SparseCloud:
    """Every live map point with the colour its reference keyframe saw (grey 128 where
    the keyframe kept no image) and its normal."""
    with slam_map.lock:
        pids = np.array([pid for pid, mp in slam_map.points.items() if not mp.bad], np.int64)
        arrays = slam_map.point_arrays(pids)
        refs = np.array([slam_map.points[pid].ref_kf_id for pid in arrays.ids], np.int64)
        views = {int(k): (KeyframePixels.of(slam_map.keyframes[int(k)]),
                          slam_map.keyframe_pose(int(k)))
                 for k in np.unique(refs) if int(k) in slam_map.keyframes}
    rgb = np.full((len(arrays), 3), _GREY, np.uint8)
    for kf_id, (pixels, T_cam_world) in views.items():
        rows = np.flatnonzero(refs == kf_id)
        rgb[rows] = _sample_rgb(pixels, T_cam_world, arrays.xyz_world[rows], camera)
    normals = -np.asarray(arrays.normals, np.float64)
    return SparseCloud(np.asarray(arrays.xyz_world, np.float64), rgb, normals)


def _sample_rgb(pixels: KeyframePixels, T_cam_world: Array, xyz_world: Array,
                camera: PinholeCamera) -> NDArray[np.uint8]:
    """Colours (N, 3) RGB of points (N, 3) in a keyframe's image (nearest pixel)."""
    img = pixels.rgb()
    out = np.full((len(xyz_world), 3), _GREY, np.uint8)
    if img is None or len(xyz_world) == 0:
        return out
    xyz_cam = xyz_world @ T_cam_world[:3, :3].T + T_cam_world[:3, 3]
    front = xyz_cam[:, 2] > 1e-6
    uv = np.full((len(xyz_world), 2), -1.0)
    if front.any():
        uv[front] = camera.project_distorted(xyz_cam[front])
    col, row = np.rint(uv[:, 0]).astype(np.int64), np.rint(uv[:, 1]).astype(np.int64)
    ok = front & (col >= 0) & (row >= 0) & (col < img.shape[1]) & (row < img.shape[0])
    out[ok] = img[row[ok], col[ok]]
    return out


def filter_cloud(cloud: SparseCloud, voxel_m: float | None = None, remove_outliers: bool = True,
                 nb_neighbors: int = 20, std_ratio: float = 2.0) -> SparseCloud:
    """Open3D's statistical outlier removal (``remove_outliers``: points whose mean
    distance to their ``nb_neighbors`` nearest neighbours exceeds the average by
    ``std_ratio`` standard deviations), then voxel down-sampling (averages per
    ``voxel_m`` cube) if given."""
    o3d = require_open3d("filtering points")
    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(cloud.xyz))
    pc.colors = o3d.utility.Vector3dVector(cloud.rgb.astype(np.float64) / 255.0)
    pc.normals = o3d.utility.Vector3dVector(cloud.normals)
    if remove_outliers and len(cloud) > nb_neighbors:
        pc, _ = pc.remove_statistical_outlier(nb_neighbors=nb_neighbors, std_ratio=std_ratio)
    if voxel_m is not None:
        pc = pc.voxel_down_sample(voxel_m)
    normals = np.asarray(pc.normals)
    normals = normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    rgb = np.clip(np.rint(np.asarray(pc.colors) * 255.0), 0, 255).astype(np.uint8)
    return SparseCloud(np.asarray(pc.points, np.float64), rgb, normals)


def write_points_ply(path: str | Path, cloud: SparseCloud) -> None:
    """Binary little-endian PLY: x y z (float32), nx ny nz (float32), red green blue (uint8)."""
    dtype = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("nx", "<f4"), ("ny", "<f4"),
                      ("nz", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    rows = np.empty(len(cloud), dtype)
    for i, axis in enumerate("xyz"):
        rows[axis] = cloud.xyz[:, i]
        rows[f"n{axis}"] = cloud.normals[:, i]
    for i, name in enumerate(("red", "green", "blue")):
        rows[name] = cloud.rgb[:, i]
    header = ["ply", "format binary_little_endian 1.0", "comment slam sparse map points",
              f"element vertex {len(cloud)}",
              *(f"property float {n}" for n in ("x", "y", "z", "nx", "ny", "nz")),
              *(f"property uchar {n}" for n in ("red", "green", "blue")), "end_header", ""]
    with open(path, "wb") as fh:
        fh.write("\n".join(header).encode("ascii"))
        fh.write(rows.tobytes())


def export_points(slam_map: Map, camera: PinholeCamera, path: str | Path,
                  voxel_m: float | None = None, clean: bool = True) -> int:
    """Write the sparse map points to ``path``; returns how many. ``clean`` removes
    outliers and ``voxel_m`` down-samples (both need Open3D; without it ``clean`` is
    skipped with a warning and ``voxel_m`` raises :class:`Open3DMissingError`)."""
    cloud = sparse_cloud(slam_map, camera)
    n_all = len(cloud)
    if voxel_m is not None or (clean and open3d_available()):
        cloud = filter_cloud(cloud, voxel_m, remove_outliers=clean)
    elif clean:
        log.warning("Open3D is not installed: map points are written without outlier removal")
    write_points_ply(path, cloud)
    log.info("wrote %d of %d map points to %s", len(cloud), n_all, path)
    return len(cloud)


# --- meshes -------------------------------------------------------------------------------
def depth_keyframes(slam_map: Map) -> list[tuple[KeyframePixels, Array]]:
    """(pixels, T_cam_world) of every keyframe with depth, culled ones too (their pose
    follows their parent)."""
    with slam_map.lock:
        return [(px, slam_map.keyframe_pose(kf.id)) for kf in slam_map.keyframes.values()
                if (px := KeyframePixels.of(kf)).has_depth]


def fuse_map(slam_map: Map, calibration: Calibration, params: TsdfParams | None = None,
             what: str = "this map") -> TsdfVolume:
    """A TSDF volume of every depth keyframe of ``slam_map`` at its optimised pose.

    Raises :class:`NoDepthError` when no keyframe has a depth image or a stereo pair
    (monocular maps, maps saved by format version 1)."""
    views = depth_keyframes(slam_map)
    if not views:
        raise NoDepthError(
            f"{what} has no keyframe with a depth image or a stereo pair "
            f"({slam_map.n_keyframes()} keyframes): a mesh needs an RGB-D or stereo map "
            "saved by this version (map format 2; older map files keep no depth images). "
            "Re-run: slam run --sensor rgbd|stereo ... --save-map FILE")
    volume = TsdfVolume(calibration.camera, params)
    for pixels, T_cam_world in views:
        depth, colour = volume.prepare(pixels.depth(calibration.stereo_bf), pixels.rgb())
        volume.integrate(depth, colour, T_cam_world)
    log.info("fused %d keyframes", volume.n_views)
    return volume


def clean_mesh(mesh: Mesh, min_triangles: int = 200) -> Mesh:
    """Drop degenerate and duplicated triangles, and connected pieces of fewer than
    ``min_triangles`` triangles (floating specks from noisy depth)."""
    m: Any = mesh.to_open3d()
    m.remove_degenerate_triangles()
    m.remove_duplicated_triangles()
    if len(m.triangles):
        clusters, counts, _ = m.cluster_connected_triangles()
        small = np.asarray(counts)[np.asarray(clusters)] < min_triangles
        m.remove_triangles_by_mask(small)
        m.remove_unreferenced_vertices()
    return Mesh.from_open3d(m)


def write_mesh_ply(path: str | Path, mesh: Mesh) -> None:
    """Binary PLY with vertex colours and normals (Open3D's writer)."""
    o3d = require_open3d("writing a mesh")
    if not o3d.io.write_triangle_mesh(str(path), mesh.to_open3d(), write_ascii=False):
        raise OSError(f"cannot write mesh {path}")


@dataclass(frozen=True)
class MeshReport:
    """What :func:`export_mesh` wrote: counts, the PNG and the renderer that drew it."""

    path: Path
    n_keyframes: int
    n_vertices: int
    n_triangles: int
    png: Path | None
    renderer: str | None


def export_mesh(slam_map: Map, calibration: Calibration, path: str | Path,
                params: TsdfParams | None = None, picture: bool = True,
                what: str = "this map") -> MeshReport:
    """Fuse the depth keyframes, clean the mesh, write it to ``path`` and (``picture``)
    a PNG of it beside it (``<path stem>.png``)."""
    path = Path(path)
    volume = fuse_map(slam_map, calibration, params, what)
    mesh = clean_mesh(volume.mesh())
    write_mesh_ply(path, mesh)
    png, renderer = None, None
    if picture:
        from slam.dense.render import render_mesh_png

        png = path.with_suffix(".png")
        with slam_map.lock:
            cams = np.array([kf.T_world_cam for kf in slam_map.good_keyframes()])
        renderer = render_mesh_png(mesh, png, cams, mesh_file=path)
    log.info("wrote mesh %s: %d vertices, %d triangles from %d keyframes", path,
             len(mesh.vertices), len(mesh.triangles), volume.n_views)
    return MeshReport(path, volume.n_views, len(mesh.vertices), len(mesh.triangles), png,
                      renderer)

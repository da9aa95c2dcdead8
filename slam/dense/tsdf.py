"""TSDF fusion of keyframe depth into a triangle mesh (Open3D voxel hashing).

Open3D's tensor ``VoxelBlockGrid`` is the volume: a hash map of 8^3-voxel blocks
allocated where depth is seen, the successor of the legacy ``ScalableTSDFVolume``
(which extracts empty meshes in Open3D 0.20, the version this was written against).
A volume cannot take a view back out, so a pose change re-integrates from scratch
(:meth:`TsdfVolume.reset`). Depth comes from the keyframe's depth image (RGB-D) or
from semi-global matching of its rectified stereo pair (:func:`stereo_depth`).
Images from a distorted camera are undistorted first, so the volume sees an ideal
pinhole camera with the calibration's K.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from slam.camera.pinhole import PinholeCamera
from slam.dense import NoDepthError, require_open3d

Array = NDArray[np.float64]
_SGBM_BLOCK = 5
_MAX_DISPARITY = 128


@dataclass(frozen=True)
class TsdfParams:
    """``voxel_m``: voxel edge (metres); ``trunc_voxels``: truncation distance in voxels;
    ``depth_min_m`` / ``depth_max_m``: readings outside are ignored; ``min_weight``:
    observations a voxel needs to be meshed; ``block_count``: initial hash capacity
    in blocks of 8^3 voxels (6 kB each: 20,000 blocks are 120 MB, about a room at 1 cm);
    it doubles when full, which Open3D does slowly (seconds), so err on the large side."""

    voxel_m: float = 0.01
    trunc_voxels: float = 4.0
    depth_min_m: float = 0.2
    depth_max_m: float = 4.0
    min_weight: float = 2.0
    block_count: int = 20_000

    def __post_init__(self) -> None:
        from slam.errors import ConfigError

        if not (0.001 <= self.voxel_m <= 1.0):
            raise ConfigError(f"TSDF voxel size {self.voxel_m} m is outside [0.001, 1]")
        if not (0 <= self.depth_min_m < self.depth_max_m):
            raise ConfigError(f"TSDF depth range [{self.depth_min_m}, {self.depth_max_m}] m")


@dataclass
class KeyframePixels:
    """What dense fusion needs of one keyframe (references, see :class:`Frame`):
    ``color`` (H, W, 3) BGR, ``image`` (H, W) grey, ``right_image`` (H, W) grey,
    ``depth_image`` (H, W) float32 metres; any may be None."""

    kf_id: int
    color: NDArray[np.uint8] | None = None
    image: NDArray[np.uint8] | None = None
    right_image: NDArray[np.uint8] | None = None
    depth_image: NDArray[np.float32] | None = None

    @classmethod
    def of(cls, kf: Any) -> KeyframePixels:
        f = kf.frame
        return cls(kf.id, f.color, f.image, f.right_image, f.depth_image)

    @property
    def has_depth(self) -> bool:
        """A depth image, or a stereo pair to compute one from."""
        return self.depth_image is not None or (
            self.right_image is not None and self.grey() is not None)

    def grey(self) -> NDArray[np.uint8] | None:
        if self.image is not None:
            return self.image
        if self.color is not None and self.color.ndim == 3:
            return np.asarray(cv2.cvtColor(self.color, cv2.COLOR_BGR2GRAY), np.uint8)
        return self.color

    def rgb(self) -> NDArray[np.uint8] | None:
        """(H, W, 3) RGB for the mesh colours: the colour image, else the grey one."""
        if self.color is not None and self.color.ndim == 3 and self.color.shape[2] == 3:
            return np.asarray(cv2.cvtColor(self.color, cv2.COLOR_BGR2RGB), np.uint8)
        grey = self.grey()
        return None if grey is None else np.repeat(grey[:, :, None], 3, axis=2)

    def depth(self, bf: float | None) -> NDArray[np.float32]:
        """(H, W) float32 metres, 0 where unknown; stereo needs ``bf`` (pixels x metres)."""
        if self.depth_image is not None:
            return self.depth_image
        left = self.grey()
        if self.right_image is None or left is None:
            raise NoDepthError(f"keyframe {self.kf_id} has neither a depth image nor a "
                               "stereo pair")
        if not bf:
            raise NoDepthError("stereo depth needs the baseline (Camera.bf)")
        return stereo_depth(left, self.right_image, bf)


def stereo_depth(left: NDArray[np.uint8], right: NDArray[np.uint8], bf: float,
                 min_depth_m: float = 0.5) -> NDArray[np.float32]:
    """(H, W) float32 depth (metres, 0 where unknown) of a rectified pair by OpenCV's
    semi-global matching: ``depth = bf / disparity``. Disparities up to
    ``bf / min_depth_m`` pixels (16 to 128) are searched; the leftmost columns, which
    the right image cannot show at that disparity, stay unknown."""
    if left.shape != right.shape or left.ndim != 2:
        raise ValueError(f"stereo images must be two (H, W) images, got {left.shape}, "
                         f"{right.shape}")
    n_disp = int(np.clip(16 * np.ceil(bf / min_depth_m / 16), 16, _MAX_DISPARITY))
    block = _SGBM_BLOCK
    sgbm = cv2.StereoSGBM.create(
        minDisparity=0, numDisparities=n_disp, blockSize=block, P1=8 * block * block,
        P2=32 * block * block, disp12MaxDiff=1, uniquenessRatio=10, speckleWindowSize=100,
        speckleRange=2, mode=cv2.STEREO_SGBM_MODE_SGBM_3WAY)
    disp = sgbm.compute(left, right).astype(np.float32) / 16.0
    ok = disp > 0.5
    depth = np.zeros(left.shape, np.float32)
    depth[ok] = np.float32(bf) / disp[ok]
    return depth


@dataclass
class Mesh:
    """A triangle mesh as arrays: ``vertices`` (N, 3) metres (world), ``triangles``
    (M, 3) int32 vertex indices, ``colors`` (N, 3) RGB in [0, 1], ``normals`` (N, 3)."""

    vertices: Array
    triangles: NDArray[np.int32]
    colors: Array
    normals: Array

    def to_open3d(self) -> Any:
        """An ``open3d.geometry.TriangleMesh`` (legacy) with the same content."""
        o3d = require_open3d("a mesh")
        m = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(self.vertices),
                                      o3d.utility.Vector3iVector(self.triangles))
        m.vertex_colors = o3d.utility.Vector3dVector(self.colors)
        m.vertex_normals = o3d.utility.Vector3dVector(self.normals)
        return m

    @classmethod
    def from_open3d(cls, m: Any) -> Mesh:
        n = len(m.vertices)
        colors = np.asarray(m.vertex_colors) if m.has_vertex_colors() else np.full((n, 3), 0.7)
        normals = np.asarray(m.vertex_normals) if m.has_vertex_normals() else np.zeros((n, 3))
        return cls(np.asarray(m.vertices, np.float64), np.asarray(m.triangles, np.int32),
                   np.asarray(colors, np.float64), np.asarray(normals, np.float64))


class TsdfVolume:
    """A TSDF volume for one camera; integrate views, extract the mesh."""

    def __init__(self, camera: PinholeCamera, params: TsdfParams | None = None) -> None:
        self._o3d = require_open3d("a TSDF mesh")
        self.camera = camera
        self.params = params or TsdfParams()
        self._undistort: tuple[NDArray[np.float32], NDArray[np.float32]] | None = None
        if camera.is_distorted:
            size = (camera.width, camera.height)
            mx, my = cv2.initUndistortRectifyMap(camera.K, camera.dist_coeffs, None, camera.K,
                                                 size, cv2.CV_32FC1)
            self._undistort = (np.asarray(mx, np.float32), np.asarray(my, np.float32))
        core = self._o3d.core
        self._K = core.Tensor(np.asarray(camera.K, np.float64))
        self.n_views = 0
        self.reset()

    def reset(self) -> None:
        """Forget every view (a new, empty volume)."""
        core = self._o3d.core
        self._grid = self._o3d.t.geometry.VoxelBlockGrid(
            attr_names=("tsdf", "weight", "color"),
            attr_dtypes=(core.float32, core.uint16, core.uint16),  # 12 bytes a voxel
            attr_channels=((1), (1), (3)), voxel_size=float(self.params.voxel_m),
            block_resolution=8, block_count=int(self.params.block_count),
            device=core.Device("CPU:0"))
        self.n_views = 0

    def prepare(self, depth_m: NDArray[np.float32], rgb: NDArray[np.uint8] | None
                ) -> tuple[NDArray[np.float32], NDArray[np.uint8]]:
        """Undistorted depth (H, W) float32 (0 outside the depth range) and colour
        (H, W, 3) uint8 RGB (grey 180 without colour), ready to integrate."""
        h, w = self.camera.height, self.camera.width
        if depth_m.shape != (h, w):
            raise ValueError(f"depth image {depth_m.shape} does not match the camera {w}x{h}")
        depth = np.nan_to_num(np.asarray(depth_m, np.float32), nan=0.0, posinf=0.0)
        depth[(depth < self.params.depth_min_m) | (depth > self.params.depth_max_m)] = 0.0
        colour = (np.full((h, w, 3), 180, np.uint8) if rgb is None
                  else np.asarray(rgb, np.uint8))
        if self._undistort is not None:
            mx, my = self._undistort
            depth = np.asarray(cv2.remap(depth, mx, my, cv2.INTER_NEAREST), np.float32)
            colour = np.asarray(cv2.remap(colour, mx, my, cv2.INTER_LINEAR), np.uint8)
        return np.ascontiguousarray(depth), np.ascontiguousarray(colour)

    def integrate(self, depth: NDArray[np.float32], colour: NDArray[np.uint8],
                  T_cam_world: Array) -> bool:
        """Fuse one view prepared by :meth:`prepare`, taken at pose ``T_cam_world``;
        False (nothing fused) when it has no depth reading in range."""
        if not np.any(depth > 0):
            return False
        o3d, p = self._o3d, self.params
        core = o3d.core
        d_img = o3d.t.geometry.Image(core.Tensor(depth))
        c_img = o3d.t.geometry.Image(core.Tensor(colour.astype(np.float32) / np.float32(255)))
        T = core.Tensor(np.asarray(T_cam_world, np.float64))
        blocks = self._grid.compute_unique_block_coordinates(
            d_img, self._K, T, 1.0, p.depth_max_m, p.trunc_voxels)
        self._grid.integrate(blocks, d_img, c_img, self._K, self._K, T, 1.0, p.depth_max_m,
                             p.trunc_voxels)
        self.n_views += 1
        return True

    def mesh(self) -> Mesh:
        """The zero level set of the fused TSDF (vertices seen at least ``min_weight``
        times); empty arrays when nothing was integrated."""
        if self.n_views == 0:
            return Mesh(np.zeros((0, 3)), np.zeros((0, 3), np.int32), np.zeros((0, 3)),
                        np.zeros((0, 3)))
        m = self._grid.extract_triangle_mesh(weight_threshold=float(self.params.min_weight))
        n = int(m.vertex.positions.shape[0])
        if n == 0:
            return Mesh(np.zeros((0, 3)), np.zeros((0, 3), np.int32), np.zeros((0, 3)),
                        np.zeros((0, 3)))
        colors = m.vertex.colors.numpy() if "colors" in m.vertex else np.full((n, 3), 0.7)
        normals = m.vertex.normals.numpy() if "normals" in m.vertex else np.zeros((n, 3))
        return Mesh(m.vertex.positions.numpy().astype(np.float64),
                    m.triangle.indices.numpy().astype(np.int32),
                    np.clip(colors.astype(np.float64), 0.0, 1.0), normals.astype(np.float64))

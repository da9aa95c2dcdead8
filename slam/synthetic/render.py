"""Vectorised ray casting of a :class:`~slam.synthetic.scene.Scene` through an ideal pinhole.

The ray of pixel ``(u, v)`` is ``C + z * R_world_cam @ [(u - cx) / fx, (v - cy) / fy, 1]``,
so the ray parameter ``z`` *is* the z-depth in the camera frame. For each quad the
hit depth and the texture coordinates are affine in ``(x_n, y_n)`` up to the factor
``z``, computed on the quad's projected bounding window only; the nearest hit wins.
Texture is sampled bilinearly (``cv2.remap``) from the mip level matching the pixel
footprint. Pixels that hit nothing get image 0 and depth 0.
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

from slam.camera.pinhole import PinholeCamera
from slam.errors import GeometryError
from slam.synthetic.scene import Quad, Scene

Array = NDArray[np.float64]
_NEAR_M = 0.02
_EDGE_TOL_M = 1e-5
_REMAP_COLS = 1024


def render(scene: Scene, camera: PinholeCamera, T_world_cam: Array, *,
           blur_sigma: float = 0.0, noise_sigma: float = 0.0, noise_seed: int = 0,
           ) -> tuple[NDArray[np.uint8], NDArray[np.float32]]:
    """Render grey image (H, W) uint8 and z-depth (H, W) float32 metres (0: no hit).

    ``T_world_cam``: (4, 4) world-from-camera pose. ``blur_sigma`` (pixels) and
    ``noise_sigma`` (grey levels, Gaussian, seeded by ``noise_seed``) are off by default.
    Distortion of ``camera`` is ignored: the image is the ideal pinhole image.
    """
    T = np.asarray(T_world_cam, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise GeometryError(f"T_world_cam must be a finite 4x4 pose, got shape {T.shape}")
    h, w = camera.height, camera.width
    xn = ((np.arange(w) - camera.cx) / camera.fx).astype(np.float32)[None, :]
    yn = ((np.arange(h) - camera.cy) / camera.fy).astype(np.float32)[:, None]
    depth = np.full((h, w), np.inf, np.float32)
    quad_id = np.full((h, w), -1, np.int32)
    tex_s = np.zeros((h, w), np.float32)
    tex_t = np.zeros((h, w), np.float32)
    for k, quad in enumerate(scene.quads):
        _intersect_quad(quad, k, T, camera, xn, yn, depth, quad_id, tex_s, tex_t)
    image = _shade(scene, camera, T, xn, yn, depth, quad_id, tex_s, tex_t)
    depth[quad_id < 0] = 0.0
    image = _degrade(image, blur_sigma, noise_sigma, noise_seed)
    return image, depth


def render_stereo(scene: Scene, camera: PinholeCamera, baseline_m: float, T_world_cam: Array,
                  *, blur_sigma: float = 0.0, noise_sigma: float = 0.0, noise_seed: int = 0,
                  ) -> tuple[NDArray[np.uint8], NDArray[np.uint8], NDArray[np.float32]]:
    """Rectified stereo pair: (left (H, W) uint8, right (H, W) uint8, left depth (H, W) m).

    The right camera sits at ``+baseline_m`` along the left camera's x axis, same
    orientation, so a point at depth z has disparity ``u_left - u_right = fx * b / z``.
    Degradation as in :func:`render`; the right image's noise uses ``noise_seed + 1``.
    """
    T_left = np.asarray(T_world_cam, dtype=np.float64)
    T_left_right = np.eye(4)
    T_left_right[0, 3] = baseline_m
    left, depth = render(scene, camera, T_left, blur_sigma=blur_sigma, noise_sigma=noise_sigma,
                         noise_seed=noise_seed)
    right, _ = render(scene, camera, T_left @ T_left_right, blur_sigma=blur_sigma,
                      noise_sigma=noise_sigma, noise_seed=noise_seed + 1)
    return left, right, depth


def _window(quad: Quad, T: Array, camera: PinholeCamera) -> tuple[int, int, int, int] | None:
    """Pixel window (r0, r1, c0, c1) that contains the quad's projection, or None."""
    xyz_cam = (quad.corners - T[:3, 3]) @ T[:3, :3]
    poly = _clip_near(xyz_cam, _NEAR_M)
    if len(poly) == 0:
        return None
    uv = camera.project(poly)
    lo = np.floor(uv.min(axis=0)) - 1
    hi = np.ceil(uv.max(axis=0)) + 2
    c0, r0 = int(max(lo[0], 0)), int(max(lo[1], 0))
    c1, r1 = int(min(hi[0], camera.width)), int(min(hi[1], camera.height))
    if c0 >= c1 or r0 >= r1:
        return None
    return r0, r1, c0, c1


def _clip_near(poly: Array, near: float) -> Array:
    """Clip a convex polygon (N, 3) in the camera frame to ``z >= near`` (Sutherland-Hodgman)."""
    out = []
    n = len(poly)
    for i in range(n):
        a, b = poly[i], poly[(i + 1) % n]
        a_in, b_in = a[2] >= near, b[2] >= near
        if a_in:
            out.append(a)
        if a_in != b_in:
            s = (near - a[2]) / (b[2] - a[2])
            out.append(a + s * (b - a))
    return np.array(out).reshape(-1, 3)


def _intersect_quad(quad: Quad, k: int, T: Array, camera: PinholeCamera, xn: NDArray[np.float32],
                    yn: NDArray[np.float32], depth: NDArray[np.float32],
                    quad_id: NDArray[np.int32], tex_s: NDArray[np.float32],
                    tex_t: NDArray[np.float32]) -> None:
    """Z-buffer update of the pixels whose ray hits ``quad`` nearer than ``depth``."""
    C = T[:3, 3]
    R_cw = T[:3, :3].T
    dist = float(quad.normal @ (C - quad.origin))
    if dist <= 1e-9:  # camera behind the visible side: back-face culling
        return
    win = _window(quad, T, camera)
    if win is None:
        return
    r0, r1, c0, c1 = win
    x, y = xn[:, c0:c1], yn[r0:r1]
    n_c, u_c, v_c = R_cw @ quad.normal, R_cw @ quad.axis_u, R_cw @ quad.axis_v
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        z = np.float32(-dist) / (x * np.float32(n_c[0]) + y * np.float32(n_c[1])
                                 + np.float32(n_c[2]))
        s = np.float32(quad.axis_u @ (C - quad.origin)) + z * (
            x * np.float32(u_c[0]) + y * np.float32(u_c[1]) + np.float32(u_c[2]))
        t = np.float32(quad.axis_v @ (C - quad.origin)) + z * (
            x * np.float32(v_c[0]) + y * np.float32(v_c[1]) + np.float32(v_c[2]))
        d_win = depth[r0:r1, c0:c1]
        hit = ((z > _NEAR_M) & (z < d_win) & (s >= -_EDGE_TOL_M) & (t >= -_EDGE_TOL_M)
               & (s <= quad.size_u_m + _EDGE_TOL_M) & (t <= quad.size_v_m + _EDGE_TOL_M))
    d_win[hit] = z[hit]
    quad_id[r0:r1, c0:c1][hit] = k
    tex_s[r0:r1, c0:c1][hit] = s[hit]
    tex_t[r0:r1, c0:c1][hit] = t[hit]


def _shade(scene: Scene, camera: PinholeCamera, T: Array, xn: NDArray[np.float32],
           yn: NDArray[np.float32], depth: NDArray[np.float32], quad_id: NDArray[np.int32],
           tex_s: NDArray[np.float32], tex_t: NDArray[np.float32]) -> NDArray[np.uint8]:
    """Bilinear texture lookup per pixel from the mip level of the pixel's footprint."""
    h, w = depth.shape
    image = np.zeros((h, w), np.uint8)
    flat_id = quad_id.ravel()
    order = np.argsort(flat_id, kind="stable")
    bounds = np.searchsorted(flat_id[order], np.arange(len(scene.quads) + 1))
    R_cw = T[:3, :3].T
    xg = np.broadcast_to(xn, (h, w)).ravel()
    yg = np.broadcast_to(yn, (h, w)).ravel()
    for k, quad in enumerate(scene.quads):
        pix = order[bounds[k]:bounds[k + 1]]
        if len(pix) == 0:
            continue
        n_c = R_cw @ quad.normal
        x, y, z = xg[pix], yg[pix], depth.ravel()[pix]
        cos_inc = np.abs(x * n_c[0] + y * n_c[1] + n_c[2]) / np.sqrt(x * x + y * y + 1.0)
        footprint = z / (camera.fx * quad.metres_per_texel * np.sqrt(np.maximum(cos_inc, 1e-3)))
        level = np.clip(np.floor(np.log2(np.maximum(footprint, 1.0))), 0,
                        len(quad.pyramid) - 1).astype(np.int32)
        s_tex = tex_s.ravel()[pix] / np.float32(quad.metres_per_texel)
        t_tex = tex_t.ravel()[pix] / np.float32(quad.metres_per_texel)
        for lv in np.unique(level):
            sel = level == lv
            scale = np.float32(2.0 ** -lv)  # pyrDown: texel i of level L sits on 2^L i
            vals = _sample(quad.pyramid[lv], (s_tex[sel] - 0.5) * scale,
                           (t_tex[sel] - 0.5) * scale)
            image.ravel()[pix[sel]] = vals
    return image


def _sample(texture: NDArray[np.uint8], x: NDArray[np.float32], y: NDArray[np.float32]
            ) -> NDArray[np.uint8]:
    """Bilinear samples (N,) of ``texture`` at texel coordinates ``x``, ``y`` (N,)."""
    n = len(x)
    cols = _REMAP_COLS
    rows = -(-n // cols)  # remap maps must stay under SHRT_MAX per side
    map_x = np.zeros(rows * cols, np.float32)
    map_y = np.zeros(rows * cols, np.float32)
    map_x[:n], map_y[:n] = x, y
    vals = cv2.remap(texture, map_x.reshape(rows, cols), map_y.reshape(rows, cols),
                     cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return np.asarray(vals.ravel()[:n], dtype=np.uint8)


def _degrade(image: NDArray[np.uint8], blur_sigma: float, noise_sigma: float,
             noise_seed: int) -> NDArray[np.uint8]:
    if blur_sigma > 0:
        image = np.asarray(cv2.GaussianBlur(image, (0, 0), blur_sigma), dtype=np.uint8)
    if noise_sigma > 0:
        rng = np.random.default_rng(noise_seed)
        noisy = image.astype(np.float32) + rng.normal(0.0, noise_sigma, image.shape)
        image = np.clip(np.round(noisy), 0, 255).astype(np.uint8)
    return image

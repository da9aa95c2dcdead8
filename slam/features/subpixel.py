"""Sub-pixel refinement of matched keypoints by patch alignment.

FAST corners sit on whole pixels of their pyramid level, so a match between two
images is off by up to half a pixel (times the level's scale) even when it is
right. For a keypoint matched to a map point, we know where the point was seen in
its reference keyframe and, from the two poses, how a small patch around it maps
into the current image (the affine warp of a fronto-parallel patch, as SVO does).
Aligning the warped reference patch with the current image by Gauss-Newton on a
2-D translation (inverse compositional, with bias compensation) puts the
observation where the reference keyframe saw the point, to a small fraction of a
pixel. Alignments that do not converge, move too far, or match badly are refused
and the keypoint keeps its detected position.

The kernel works on raw (distorted) images and pixel positions; callers convert
to and from ideal pixels.
"""

from __future__ import annotations

import numba as nb
import numpy as np

HALF = 3  # patch of (2 * HALF + 1)^2 samples


@nb.njit(cache=True, nogil=True, inline="always")
def _bilinear(img: np.ndarray, x: float, y: float) -> float:
    x0 = int(np.floor(x))
    y0 = int(np.floor(y))
    ax = x - x0
    ay = y - y0
    a = img[y0, x0] * (1.0 - ax) + img[y0, x0 + 1] * ax
    b = img[y0 + 1, x0] * (1.0 - ax) + img[y0 + 1, x0 + 1] * ax
    return a * (1.0 - ay) + b * ay


@nb.njit(cache=True, nogil=True)
def _inside(img: np.ndarray, x: float, y: float, margin: float) -> bool:
    h, w = img.shape
    return margin <= x < w - 1 - margin and margin <= y < h - 1 - margin


@nb.njit(cache=True, nogil=True)
def _align_one(ref_img, cur_img, ref_uv, cur_uv, A_inv, step, half, iters, max_shift,
               max_rel_rms):
    """Refined (u, v) of one keypoint and whether it is accepted."""
    n = 2 * half + 3  # template with a one-sample border for gradients
    reach = (half + 1) * step * (abs(A_inv[0, 0]) + abs(A_inv[0, 1]) + abs(A_inv[1, 0])
                                 + abs(A_inv[1, 1]))
    if not _inside(ref_img, ref_uv[0], ref_uv[1], reach + 1.0):
        return cur_uv[0], cur_uv[1], False
    tpl = np.empty((n, n))
    for r in range(n):
        for c in range(n):
            ox = (c - half - 1) * step
            oy = (r - half - 1) * step
            tpl[r, c] = _bilinear(ref_img, ref_uv[0] + A_inv[0, 0] * ox + A_inv[0, 1] * oy,
                                  ref_uv[1] + A_inv[1, 0] * ox + A_inv[1, 1] * oy)
    m = 2 * half + 1
    gx = np.empty((m, m))
    gy = np.empty((m, m))
    t = np.empty((m, m))
    t_mean = 0.0
    for r in range(m):
        for c in range(m):
            t[r, c] = tpl[r + 1, c + 1]
            t_mean += t[r, c]
            gx[r, c] = (tpl[r + 1, c + 2] - tpl[r + 1, c]) / (2.0 * step)
            gy[r, c] = (tpl[r + 2, c + 1] - tpl[r, c + 1]) / (2.0 * step)
    t_mean /= m * m
    hxx = 0.0
    hxy = 0.0
    hyy = 0.0
    t_var = 0.0
    for r in range(m):
        for c in range(m):
            hxx += gx[r, c] * gx[r, c]
            hxy += gx[r, c] * gy[r, c]
            hyy += gy[r, c] * gy[r, c]
            t_var += (t[r, c] - t_mean) ** 2
    det = hxx * hyy - hxy * hxy
    if det <= 1e-9 * (hxx + hyy) ** 2 or t_var <= 0.0:
        return cur_uv[0], cur_uv[1], False
    u = cur_uv[0]
    v = cur_uv[1]
    rms = 0.0
    for _ in range(iters):
        if not _inside(cur_img, u, v, (half + 1) * step + 1.0):
            return cur_uv[0], cur_uv[1], False
        i_mean = 0.0
        vals = np.empty((m, m))
        for r in range(m):
            for c in range(m):
                vals[r, c] = _bilinear(cur_img, u + (c - half) * step, v + (r - half) * step)
                i_mean += vals[r, c]
        i_mean /= m * m
        bx = 0.0
        by = 0.0
        rms = 0.0
        for r in range(m):
            for c in range(m):
                e = (vals[r, c] - i_mean) - (t[r, c] - t_mean)
                bx += gx[r, c] * e
                by += gy[r, c] * e
                rms += e * e
        dx = (hyy * bx - hxy * by) / det
        dy = (hxx * by - hxy * bx) / det
        u -= dx
        v -= dy
        if dx * dx + dy * dy < 1e-4 * step * step:
            break
    shift2 = (u - cur_uv[0]) ** 2 + (v - cur_uv[1]) ** 2
    ok = shift2 <= (max_shift * step) ** 2 and rms <= max_rel_rms**2 * t_var
    return u, v, ok


@nb.njit(cache=True, nogil=True)
def warp_inverse(T_cur_ref: np.ndarray, xyz_ref: np.ndarray, fx: float, fy: float
                 ) -> np.ndarray:
    """``A_inv`` (2, 2): offsets in the current image -> offsets in the reference image
    (pixels) around a point ``xyz_ref`` (3,) of the reference camera (metres), its patch
    taken as fronto-parallel to the reference camera; ``T_cur_ref`` (4, 4). Ideal
    pixels: lens distortion is locally near identity at patch size."""
    R = T_cur_ref[:3, :3]
    x = R[0, 0] * xyz_ref[0] + R[0, 1] * xyz_ref[1] + R[0, 2] * xyz_ref[2] + T_cur_ref[0, 3]
    y = R[1, 0] * xyz_ref[0] + R[1, 1] * xyz_ref[1] + R[1, 2] * xyz_ref[2] + T_cur_ref[1, 3]
    z = R[2, 0] * xyz_ref[0] + R[2, 1] * xyz_ref[1] + R[2, 2] * xyz_ref[2] + T_cur_ref[2, 3]
    # d uv_cur / d xyz_cur (2, 3) times d xyz_cur / d uv_ref (3, 2) = R[:, :2] z_ref / f
    J = np.array([[fx / z, 0.0, -fx * x / (z * z)], [0.0, fy / z, -fy * y / (z * z)]])
    A = np.empty((2, 2))
    for r in range(2):
        for c in range(2):
            A[r, c] = (J[r, 0] * R[0, c] + J[r, 1] * R[1, c] + J[r, 2] * R[2, c]) * (
                xyz_ref[2] / (fx if c == 0 else fy))
    det = A[0, 0] * A[1, 1] - A[0, 1] * A[1, 0]
    out = np.empty((2, 2))
    out[0, 0] = A[1, 1] / det
    out[0, 1] = -A[0, 1] / det
    out[1, 0] = -A[1, 0] / det
    out[1, 1] = A[0, 0] / det
    return out


@nb.njit(cache=True, nogil=True)
def align_patches(images: np.ndarray, group_slot: np.ndarray, T_ref_world: np.ndarray,
                  T_cur_ref: np.ndarray, group: np.ndarray, xyz_world: np.ndarray,
                  ref_uv: np.ndarray, cur_img: np.ndarray, cur_uv: np.ndarray,
                  step: np.ndarray, fx: float, fy: float, half: int, iters: int,
                  max_shift: float, max_rel_rms: float) -> tuple[np.ndarray, np.ndarray]:
    """Align N patches of reference keyframe images into ``cur_img`` (H, W) uint8.

    ``images`` (S, H, W) uint8 holds the reference images; keyframe group g (G of them)
    is ``images[group_slot[g]]`` with poses ``T_ref_world[g]`` and
    ``T_cur_ref[g]`` (4, 4). Per point: ``group`` (N,), ``xyz_world`` (N, 3) metres,
    ``ref_uv``/``cur_uv`` (N, 2) raw pixels (where the reference saw it; the detected
    keypoint here), ``step`` (N,) sample spacing in pixels (the keypoint level's
    scale). Returns refined ``uv`` (N, 2) and ``ok`` (N,) (False rows keep ``cur_uv``).
    """
    n = len(ref_uv)
    out = cur_uv.copy()
    ok = np.zeros(n, np.bool_)
    xyz_ref = np.empty(3)
    for i in range(n):
        g = group[i]
        T = T_ref_world[g]
        for r in range(3):
            xyz_ref[r] = (T[r, 0] * xyz_world[i, 0] + T[r, 1] * xyz_world[i, 1]
                          + T[r, 2] * xyz_world[i, 2] + T[r, 3])
        Tc = T_cur_ref[g]
        z_cur = Tc[2, 0] * xyz_ref[0] + Tc[2, 1] * xyz_ref[1] + Tc[2, 2] * xyz_ref[2] + Tc[2, 3]
        if xyz_ref[2] <= 0.0 or z_cur <= 0.0:
            continue
        A_inv = warp_inverse(Tc, xyz_ref, fx, fy)
        u, v, good = _align_one(images[group_slot[g]], cur_img, ref_uv[i], cur_uv[i], A_inv,
                                step[i], half, iters, max_shift, max_rel_rms)
        if good:
            out[i, 0] = u
            out[i, 1] = v
            ok[i] = True
    return out, ok

"""Keypoint patches: oriented by the keypoint angle, sized by its octave.

A patch is ``PATCH_SIZE`` x ``PATCH_SIZE`` samples spread over ``support`` pixels of the
keypoint's pyramid level (so ``support * scale_factor**octave`` raw pixels across; ORB's
own patch is 31 pixels), its x axis along the keypoint angle (OpenCV's degrees, image
axes).
Sampling is one :func:`cv2.remap` per pyramid level for all keypoints of that level.

The sampler can write each patch directly in the space-to-depth layout the runtime
network takes, ``(N, r*r, S/r, S/r)`` with channel ``dy*r + dx`` holding pixel
``(i*r + dy, j*r + dx)`` (PyTorch's ``pixel_unshuffle``), so no reshuffle is needed.

The learned descriptor (:mod:`slam.features.learned`) samples its input here at run
time and the training companion (:mod:`slam.learn`) builds its training patches with the
same code, so both see the same patches. numpy and OpenCV only.
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

PATCH_SIZE = 32
UNSHUFFLE = 4


def patch_offsets(size: int = PATCH_SIZE, unshuffle: int = 1) -> NDArray[np.float32]:
    """Sample offsets (2, size*size) in pixels around the centre, x then y, in output order.

    ``unshuffle = 1``: row-major pixels; ``unshuffle = r``: space-to-depth order,
    channel ``dy*r + dx`` then spatial ``(i, j)`` for pixel ``(i*r + dy, j*r + dx)``.
    """
    if size % unshuffle:
        raise ValueError(f"patch size {size} is not a multiple of {unshuffle}")
    half = (size - 1) / 2.0
    r = unshuffle
    n = size // r
    dy, dx, i, j = np.meshgrid(np.arange(r), np.arange(r), np.arange(n), np.arange(n),
                               indexing="ij")
    x = (j * r + dx).ravel() - half
    y = (i * r + dy).ravel() - half
    return np.stack([x, y]).astype(np.float32)


class PatchSampler:
    """Oriented, scaled patches of a grey image at keypoints.

    ``scale_factor`` and ``n_levels`` describe the pyramid the keypoints came from
    (``FeatureConfig``); ``size`` samples across ``support`` pixels of the level;
    ``unshuffle`` the output layout (see :func:`patch_offsets`).
    """

    def __init__(self, scale_factor: float = 1.2, n_levels: int = 8,
                 size: int = PATCH_SIZE, unshuffle: int = 1,
                 support: float = float(PATCH_SIZE)) -> None:
        self.scale_factor = float(scale_factor)
        self.n_levels = int(n_levels)
        self.size = size
        self.unshuffle = unshuffle
        self.support = float(support)
        offsets = patch_offsets(size, unshuffle) * np.float32(self.support / size)
        self._grid = np.vstack([offsets, np.ones((1, offsets.shape[1]), np.float32)])

    def pyramid(self, image: NDArray[np.uint8]) -> list[NDArray[np.uint8]]:
        """Levels of ``image`` (H, W) uint8; level l is ``scale_factor**l`` smaller, each
        resized (bilinear) from the one before, as ORB builds its pyramid."""
        h, w = image.shape
        levels = [image]
        for lvl in range(1, self.n_levels):
            s = self.scale_factor ** lvl
            size = (max(1, round(w / s)), max(1, round(h / s)))
            levels.append(np.asarray(cv2.resize(levels[-1], size,
                                                interpolation=cv2.INTER_LINEAR), np.uint8))
        return levels

    def sample(self, image: NDArray[np.uint8], uv: NDArray[np.float64],
               octave: NDArray[np.int32], angle_deg: NDArray[np.float32],
               pyramid: list[NDArray[np.uint8]] | None = None) -> NDArray[np.uint8]:
        """Patches (N, size, size) uint8 (or (N, r*r, size/r, size/r) when unshuffled).

        ``uv`` (N, 2) raw pixels at level 0, ``octave`` (N,) pyramid levels, ``angle_deg``
        (N,) keypoint angles. Samples outside the image repeat the border pixel.
        """
        uv = np.asarray(uv, np.float64).reshape(-1, 2)
        n = len(uv)
        out = np.empty((n, self.size * self.size), np.uint8)
        if n == 0:
            return self._shape(out)
        levels = pyramid if pyramid is not None else self.pyramid(image)
        octave = np.clip(np.asarray(octave, np.int64), 0, len(levels) - 1)
        theta = np.radians(np.asarray(angle_deg, np.float64).reshape(-1))
        scale = self.scale_factor ** octave.astype(np.float64)
        cos, sin = np.cos(theta), np.sin(theta)
        # Per keypoint, map = A @ [ox; oy; 1] with rows (cos, -sin, u) for x and
        # (sin, cos, v) for y, in level coordinates: one small matrix product.
        rows = np.empty((n, 2, 3), np.float32)
        rows[:, 0] = np.stack([cos, -sin, uv[:, 0] / scale], axis=1)
        rows[:, 1] = np.stack([sin, cos, uv[:, 1] / scale], axis=1)
        # einsum, not @: multi-threaded BLAS is slow on a busy machine for such shapes.
        maps = np.einsum("ik,kj->ij", rows.reshape(2 * n, 3), self._grid, optimize=False)
        map_x, map_y = maps[0::2], maps[1::2]
        for lvl in np.unique(octave):
            sel = np.flatnonzero(octave == lvl)
            out[sel] = cv2.remap(levels[int(lvl)], map_x[sel], map_y[sel], cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE)
        return self._shape(out)

    def _shape(self, flat: NDArray[np.uint8]) -> NDArray[np.uint8]:
        r = self.unshuffle
        if r == 1:
            return flat.reshape(-1, self.size, self.size)
        return flat.reshape(-1, r * r, self.size // r, self.size // r)


def standardize(patches: NDArray[np.uint8], eps: float = 1.0) -> NDArray[np.float32]:
    """Patches as float32 with zero mean and unit standard deviation each (any shape
    (N, ...)); ``eps`` (grey levels) keeps flat patches from blowing up."""
    n = len(patches)
    x = patches.reshape(n, -1).astype(np.float32)
    m = x.shape[1]
    mean = np.einsum("ij->i", x) / np.float32(m)
    var = np.maximum(np.einsum("ij,ij->i", x, x) / m - mean * mean, 0.0)
    inv = 1.0 / (np.sqrt(var) + np.float32(eps))
    x *= inv[:, None]
    x -= (mean * inv)[:, None]
    return x.reshape(patches.shape)


def unshuffle_patches(patches: NDArray[np.uint8], r: int = UNSHUFFLE) -> NDArray[np.uint8]:
    """(N, S, S) -> (N, r*r, S/r, S/r) space-to-depth (the layout of ``pixel_unshuffle``)."""
    n, s, _ = patches.shape
    m = s // r
    x = patches.reshape(n, m, r, m, r)  # n, i, dy, j, dx
    return np.ascontiguousarray(x.transpose(0, 2, 4, 1, 3).reshape(n, r * r, m, m))

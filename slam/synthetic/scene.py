"""Synthetic scenes of textured planar quads, for renderer-based tests.

World frame of :func:`room_scene`: x along the room length, y along its width,
z up, metres, the room spanning ``[0, L] x [0, W] x [0, H]``. A :class:`Quad` is
one-sided: it is seen only from the side its normal ``axis_u x axis_v`` points
to (inwards for the room, outwards for boxes). Textures are grey uint8 images
mapped with ``metres_per_texel``: texel column ``i`` is centred on
``s = (i + 0.5) * metres_per_texel`` along ``axis_u`` (rows likewise along ``axis_v``).
"""

from __future__ import annotations

import functools
import string
from dataclasses import dataclass, field

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray

from slam.errors import ConfigError

Array = NDArray[np.float64]
Image = NDArray[np.uint8]

_N_MIP_LEVELS = 4
_SHAPES_PER_M2 = 220.0
_TEXT_CHARS = string.ascii_uppercase + string.digits


@dataclass(frozen=True)
class Quad:
    """A textured rectangle ``origin + s * axis_u + t * axis_v``, ``s in [0, size_u_m]``, etc.

    ``origin``, ``axis_u``, ``axis_v``: (3,) world metres / unit vectors (orthogonal).
    ``texture``: (Ht, Wt) uint8. ``pyramid``: mip levels derived from it (level 0 first).
    """

    origin: Array
    axis_u: Array
    axis_v: Array
    size_u_m: float
    size_v_m: float
    texture: Image
    metres_per_texel: float
    pyramid: tuple[Image, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("origin", "axis_u", "axis_v"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.float64))
        if abs(float(self.axis_u @ self.axis_v)) > 1e-9:
            raise ConfigError("quad axes must be orthogonal")
        levels = [np.ascontiguousarray(self.texture, dtype=np.uint8)]
        for _ in range(_N_MIP_LEVELS - 1):
            if min(levels[-1].shape) < 8:
                break
            levels.append(np.asarray(cv2.pyrDown(levels[-1]), dtype=np.uint8))
        for lv in levels:
            lv.setflags(write=False)
        object.__setattr__(self, "texture", levels[0])
        object.__setattr__(self, "pyramid", tuple(levels))

    @property
    def normal(self) -> Array:
        """Unit normal (3,) of the visible side, ``axis_u x axis_v``."""
        n = np.cross(self.axis_u, self.axis_v)
        return np.asarray(n / np.linalg.norm(n), dtype=np.float64)

    @property
    def corners(self) -> Array:
        """The four corners (4, 3) in the world frame, metres, in order around the quad."""
        su = self.size_u_m * self.axis_u
        sv = self.size_v_m * self.axis_v
        o = self.origin
        return np.stack([o, o + su, o + su + sv, o + sv])


@dataclass(frozen=True)
class Box:
    """Axis-aligned box ``[lo, hi]`` (each (3,), world metres)."""

    lo: Array
    hi: Array


@dataclass(frozen=True)
class Scene:
    """Quads to render, plus the room bounds and solid boxes (for free-space checks)."""

    quads: tuple[Quad, ...]
    room_lo: Array
    room_hi: Array
    boxes: tuple[Box, ...] = ()

    def is_free(self, xyz_world: Array, clearance_m: float = 0.0) -> NDArray[np.bool_]:
        """Mask (N,) of points (N, 3) inside the room and outside every box, with margin."""
        xyz = np.asarray(xyz_world, dtype=np.float64).reshape(-1, 3)
        ok = np.all((xyz >= self.room_lo + clearance_m) & (xyz <= self.room_hi - clearance_m), 1)
        for b in self.boxes:
            inside = np.all((xyz > b.lo - clearance_m) & (xyz < b.hi + clearance_m), axis=1)
            ok &= ~inside
        return np.asarray(ok)


def make_texture(width_px: int, height_px: int, texels_per_m: float, rng: np.random.Generator
                 ) -> Image:
    """Corner-rich, non-repetitive grey texture (height_px, width_px) uint8.

    Multi-octave smoothed noise, then random rectangles, polygons, ellipses, bars and
    text-like glyphs of log-uniform size (about 1.5 cm to 45 cm) and random grey level.
    """
    img = _noise_background(width_px, height_px, rng)
    area_m2 = width_px * height_px / texels_per_m**2
    n_shapes = max(int(_SHAPES_PER_M2 * area_m2), 20)
    for _ in range(n_shapes):
        _draw_random_shape(img, texels_per_m, rng)
    return np.asarray(cv2.GaussianBlur(img, (0, 0), 0.7), dtype=np.uint8)


def _noise_background(width_px: int, height_px: int, rng: np.random.Generator) -> Image:
    acc = np.zeros((height_px, width_px), np.float32)
    for cell, weight in ((160, 1.0), (40, 0.6), (10, 0.35)):
        grid = rng.random((height_px // cell + 2, width_px // cell + 2)).astype(np.float32)
        acc += weight * cv2.resize(grid, (width_px, height_px), interpolation=cv2.INTER_CUBIC)
    acc -= acc.min()
    acc *= 140.0 / max(float(acc.max()), 1e-6)
    return (acc + 55.0).astype(np.uint8)


def _draw_random_shape(img: Image, texels_per_m: float, rng: np.random.Generator) -> None:
    h, w = img.shape
    size = float(np.exp(rng.uniform(np.log(0.015), np.log(0.45)))) * texels_per_m
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    grey = int(rng.integers(0, 256))
    kind = rng.random()
    if kind < 0.35:  # rotated rectangle
        rect = ((cx, cy), (size, size * rng.uniform(0.3, 1.0)), rng.uniform(0, 180))
        pts = cv2.boxPoints(rect)
        cv2.fillPoly(img, [np.round(pts).astype(np.int32)], grey, cv2.LINE_AA)
    elif kind < 0.55:  # irregular polygon (3-6 vertices)
        n = int(rng.integers(3, 7))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = size * rng.uniform(0.3, 0.6, n)
        pts = np.stack([cx + rad * np.cos(angles), cy + rad * np.sin(angles)], 1)
        cv2.fillPoly(img, [np.round(pts).astype(np.int32)], grey, cv2.LINE_AA)
    elif kind < 0.7:  # ellipse
        axes = (max(int(size / 2), 1), max(int(size * rng.uniform(0.15, 0.5)), 1))
        cv2.ellipse(img, (int(cx), int(cy)), axes, rng.uniform(0, 180), 0, 360, grey, -1,
                    cv2.LINE_AA)
    elif kind < 0.82:  # bar / thick segment
        ang = float(rng.uniform(0, np.pi))
        dx, dy = 0.5 * size * np.cos(ang), 0.5 * size * np.sin(ang)
        thick = max(int(size * rng.uniform(0.05, 0.15)), 1)
        cv2.line(img, (int(cx - dx), int(cy - dy)), (int(cx + dx), int(cy + dy)), grey, thick,
                 cv2.LINE_AA)
    else:  # text-like glyphs
        text = "".join(rng.choice(list(_TEXT_CHARS), int(rng.integers(1, 5))))
        scale = size / 30.0
        thick = max(int(scale * 2), 1)
        font = int(rng.choice([cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX,
                               cv2.FONT_HERSHEY_COMPLEX]))
        cv2.putText(img, text, (int(cx), int(cy)), font, scale, grey, thick, cv2.LINE_AA)


def textured_quad(origin: ArrayLike, edge_u: ArrayLike, edge_v: ArrayLike,
                  rng: np.random.Generator,
                  metres_per_texel: float = 0.005) -> Quad:
    """Quad spanning ``origin + a * edge_u + b * edge_v`` (a, b in [0, 1]) with a new texture."""
    e_u = np.asarray(edge_u, dtype=np.float64)
    e_v = np.asarray(edge_v, dtype=np.float64)
    size_u, size_v = float(np.linalg.norm(e_u)), float(np.linalg.norm(e_v))
    w_px = int(np.ceil(size_u / metres_per_texel))
    h_px = int(np.ceil(size_v / metres_per_texel))
    tex = make_texture(w_px, h_px, 1.0 / metres_per_texel, rng)
    return Quad(np.asarray(origin, dtype=np.float64), e_u / size_u, e_v / size_v,
                size_u, size_v, tex, metres_per_texel)


def box_faces(lo: ArrayLike, hi: ArrayLike, rng: np.random.Generator, inward: bool = False,
              metres_per_texel: float = 0.005) -> list[Quad]:
    """The six faces of the axis-aligned box ``[lo, hi]``, normals outward (or ``inward``)."""
    lo_xyz = np.asarray(lo, dtype=np.float64)
    hi_xyz = np.asarray(hi, dtype=np.float64)
    ext = np.diag(hi_xyz - lo_xyz)  # rows: edge vectors along x, y, z
    quads = []
    for a in range(3):
        b, c = (a + 1) % 3, (a + 2) % 3  # e_b x e_c = e_a
        for at_hi in (False, True):
            origin = lo_xyz.copy()
            if at_hi:
                origin[a] = hi_xyz[a]
            normal_positive = at_hi != inward
            eu, ev = (ext[b], ext[c]) if normal_positive else (ext[c], ext[b])
            quads.append(textured_quad(origin, eu, ev, rng, metres_per_texel))
    return quads


def build_room_scene(seed: int = 0, size_m: tuple[float, float, float] = (8.0, 6.0, 3.0),
                     metres_per_texel: float = 0.005) -> Scene:
    """Inside of a room (walls, floor, ceiling seen from inside) with pillars and boxes.

    The boxes keep clear of the central region ``|x - L/2| < 1.6, |y - W/2| < 1.3``
    where :mod:`slam.synthetic.trajectories` moves the camera. Deterministic in ``seed``.
    """
    rng = np.random.default_rng(seed)
    L, W, H = size_m
    room_lo, room_hi = np.zeros(3), np.array([L, W, H])
    quads = box_faces(room_lo, room_hi, rng, inward=True, metres_per_texel=metres_per_texel)
    cx, cy = L / 2, W / 2
    boxes = (
        Box(np.array([cx - 3.0, cy - 2.4, 0.0]), np.array([cx - 2.5, cy - 1.9, H])),  # pillar
        Box(np.array([cx + 2.2, cy + 1.6, 0.0]), np.array([cx + 2.7, cy + 2.1, H])),  # pillar
        Box(np.array([cx + 2.1, cy - 2.5, 0.0]), np.array([cx + 3.2, cy - 1.7, 0.9])),  # crate
        Box(np.array([cx - 3.4, cy + 1.5, 0.0]), np.array([cx - 2.2, cy + 2.4, 1.2])),  # cabinet
        Box(np.array([cx - 0.6, cy + 1.8, 0.0]), np.array([cx + 0.4, cy + 2.3, 0.7])),  # low box
    )
    for box in boxes:
        faces = box_faces(box.lo, box.hi, rng, metres_per_texel=metres_per_texel)
        # drop faces lying on the floor or ceiling: never visible
        quads += [q for q in faces if not _on_room_boundary(q, room_lo, room_hi)]
    return Scene(tuple(quads), room_lo, room_hi, boxes)


def _on_room_boundary(q: Quad, room_lo: Array, room_hi: Array) -> bool:
    z = q.corners[:, 2]
    return bool(np.all(z <= room_lo[2] + 1e-9) or np.all(z >= room_hi[2] - 1e-9))


@functools.lru_cache(maxsize=4)
def room_scene(seed: int = 0) -> Scene:
    """Cached default 8 m x 6 m x 3 m :func:`build_room_scene` (textures are read-only)."""
    return build_room_scene(seed)

"""A picture of a mesh without a display: Open3D's offscreen renderer, else matplotlib.

Open3D renders headless through Filament; on a machine without a GPU it needs a
software Vulkan driver (Debian: ``libvulkan1 mesa-vulkan-drivers``). It runs in a
fresh process of its own (``python -m slam.dense.render``) with a time limit:
Filament prints on stdout, may crash, and in a process that has been fusing a
large TSDF it was seen to stall for minutes in ``BeginFrame``. Where it cannot
start, fails or runs out of time, a painter's-algorithm rendering of the
(decimated) mesh with matplotlib is saved instead. The viewpoint stands behind and
above the mean keyframe camera, looking where the cameras looked, so the picture
shows the scene as the sequence saw it.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from slam.dense import DenseError, require_open3d
from slam.dense.tsdf import Mesh

log = logging.getLogger(__name__)
Array = NDArray[np.float64]
_FOV_DEG = 60.0
_MAX_FALLBACK_TRIANGLES = 150_000
_RENDER_TIMEOUT_S = 120.0


def viewpoint(vertices: Array, T_world_cams: Array | None) -> tuple[Array, Array, Array]:
    """(eye, centre, up) world points/vector for a picture of ``vertices`` (N, 3).

    With keyframe poses ``T_world_cams`` (K, 4, 4): from behind and above the mean
    camera, looking along the mean viewing direction, up = the cameras' mean up (-y).
    Without: from above one side of the bounding box."""
    centre = np.median(vertices, axis=0) if len(vertices) else np.zeros(3)
    if T_world_cams is None or len(T_world_cams) == 0:
        extent = float(np.ptp(vertices, axis=0).max()) if len(vertices) else 1.0
        return centre + np.array([0.0, -1.2, 0.9]) * extent, centre, np.array([0.0, 0.0, 1.0])
    cams = np.asarray(T_world_cams, np.float64)
    c_mean = cams[:, :3, 3].mean(axis=0)
    forward = _unit(cams[:, :3, 2].mean(axis=0))
    up = _unit(-cams[:, :3, 1].mean(axis=0))
    depth = float(np.median((vertices - c_mean) @ forward)) if len(vertices) else 1.0
    depth = max(depth, 0.5)
    target = c_mean + forward * depth
    eye = c_mean - forward * 0.5 * depth + up * 0.2 * depth
    return eye, target, up


def _unit(v: Array) -> Array:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-12 else np.array([0.0, 0.0, 1.0])


def render_mesh_png(mesh: Mesh, path: str | Path, T_world_cams: Array | None = None,
                    size: tuple[int, int] = (1024, 768), mesh_file: str | Path | None = None,
                    timeout_s: float = _RENDER_TIMEOUT_S) -> str:
    """Save a picture of ``mesh`` to ``path`` (PNG); returns the renderer used
    (``"open3d"`` or ``"matplotlib"``). ``mesh_file``: the mesh as a PLY file already
    written (else a temporary one is), for the Open3D rendering process."""
    path = Path(path)
    eye, centre, up = viewpoint(mesh.vertices, T_world_cams)
    try:
        if mesh_file is not None:
            _render_open3d(Path(mesh_file), path, eye, centre, up, size, timeout_s)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                ply = Path(tmp) / "mesh.ply"
                o3d = require_open3d("rendering")
                o3d.io.write_triangle_mesh(str(ply), mesh.to_open3d())
                _render_open3d(ply, path, eye, centre, up, size, timeout_s)
        return "open3d"
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        log.info("Open3D's offscreen renderer gave no picture (%s); drawing with matplotlib",
                 exc)
    _render_matplotlib(mesh, path, eye, centre, up, size)
    return "matplotlib"


def _render_open3d(mesh_file: Path, path: Path, eye: Array, centre: Array, up: Array,
                   size: tuple[int, int], timeout_s: float) -> None:
    """Run :func:`main` in a fresh interpreter; RuntimeError when it fails,
    ``subprocess.TimeoutExpired`` (it is killed) when it takes too long."""
    cmd = [sys.executable, "-m", "slam.dense.render", str(mesh_file), str(path),
           "--size", *map(str, size), "--eye", *map(repr, eye.tolist()),
           "--centre", *map(repr, centre.tolist()), "--up", *map(repr, up.tolist())]
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          timeout=timeout_s, check=False, text=True)
    if done.returncode != 0:
        last = done.stderr.strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
        raise RuntimeError(last[0])


def _draw_open3d(mesh_file: Path, path: Path, eye: Array, centre: Array, up: Array,
                 size: tuple[int, int]) -> None:
    """Open3D's offscreen rendering of the PLY ``mesh_file`` (in the rendering process)."""
    o3d = require_open3d("rendering")
    rendering = o3d.visualization.rendering
    o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)
    mesh = o3d.io.read_triangle_mesh(str(mesh_file))
    if not mesh.has_vertex_normals():
        mesh.compute_vertex_normals()
    renderer = rendering.OffscreenRenderer(*size)
    material = rendering.MaterialRecord()
    material.shader = "defaultLit"
    renderer.scene.set_background([1.0, 1.0, 1.0, 1.0])
    renderer.scene.add_geometry("mesh", mesh, material)
    renderer.setup_camera(_FOV_DEG, centre.astype(np.float32), eye.astype(np.float32),
                          up.astype(np.float32))
    image = renderer.render_to_image()
    if not o3d.io.write_image(str(path), image):
        raise OSError(f"cannot write {path}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m slam.dense.render MESH.ply OUT.png --eye X Y Z --centre X Y Z --up X Y Z
    [--size W H]``: the Open3D rendering process."""
    p = argparse.ArgumentParser(prog="python -m slam.dense.render")
    p.add_argument("mesh", type=Path)
    p.add_argument("png", type=Path)
    for name in ("eye", "centre", "up"):
        p.add_argument(f"--{name}", type=float, nargs=3, required=True)
    p.add_argument("--size", type=int, nargs=2, default=(1024, 768))
    args = p.parse_args(argv)
    try:
        _draw_open3d(args.mesh, args.png, np.array(args.eye), np.array(args.centre),
                     np.array(args.up), tuple(args.size))
    except (RuntimeError, OSError, DenseError) as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


def _look_at(eye: Array, centre: Array, up: Array) -> Array:
    """Camera-from-world rotation rows (x right, y down, z forward) of a look-at camera."""
    z = _unit(centre - eye)
    x = np.cross(-up, z)  # x = y cross z with y ~ -up
    if np.linalg.norm(x) < 1e-9:
        x = np.cross(np.array([0.0, 0.0, -1.0]), z)
    x = _unit(x)
    y = np.cross(z, x)
    return np.stack([x, y, z])


def _decimated(mesh: Mesh) -> Mesh:
    if len(mesh.triangles) <= _MAX_FALLBACK_TRIANGLES:
        return mesh
    try:
        m = mesh.to_open3d()
    except Exception:  # no Open3D: keep every triangle
        return mesh
    extent = float(np.ptp(mesh.vertices, axis=0).max())
    voxel = extent / 400.0
    while True:
        small = m.simplify_vertex_clustering(voxel_size=voxel)
        if len(small.triangles) <= _MAX_FALLBACK_TRIANGLES:
            small.compute_vertex_normals()
            return Mesh.from_open3d(small)
        voxel *= 1.5


def _render_matplotlib(mesh: Mesh, path: Path, eye: Array, centre: Array, up: Array,
                       size: tuple[int, int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection

    m = _decimated(mesh)
    R = _look_at(eye, centre, up)
    xyz = (m.vertices - eye) @ R.T
    w, h = size
    f = 0.5 * h / np.tan(np.radians(_FOV_DEG) / 2)  # vertical field of view, as Open3D
    tri = m.triangles
    z = xyz[tri, 2]
    keep = np.all(z > 0.05, axis=1)
    tri = tri[keep]
    uv = f * xyz[:, :2] / np.maximum(xyz[:, 2:3], 1e-6) + [w / 2, h / 2]
    order = np.argsort(-xyz[tri, 2].mean(axis=1))  # far first
    tri = tri[order]
    normal = np.cross(m.vertices[tri[:, 1]] - m.vertices[tri[:, 0]],
                      m.vertices[tri[:, 2]] - m.vertices[tri[:, 0]])
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    light = _unit(eye - centre + 0.5 * up)
    shade = 0.35 + 0.65 * np.abs(normal @ light)
    colours = np.clip(m.colors[tri].mean(axis=1) * shade[:, None], 0.0, 1.0)
    fig = plt.figure(figsize=(w / 100, h / 100), dpi=100)
    ax: Any = fig.add_axes((0, 0, 1, 1))
    ax.add_collection(PolyCollection(uv[tri], facecolors=colours, edgecolors="none",
                                     antialiaseds=False))
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_axis_off()
    fig.savefig(path, dpi=100, facecolor="white")
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())

"""Pictures of meshes without a display."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest

from slam.dense import render
from slam.dense.render import render_mesh_png, viewpoint
from slam.dense.tsdf import Mesh
from slam.geometry.lie import make_pose


def _red_box(o3d: ModuleType) -> Mesh:
    box = o3d.geometry.TriangleMesh.create_box(1.0, 1.0, 1.0)
    box.translate([-0.5, -0.5, 2.5])  # in front of a camera at the origin looking along +z
    box.compute_vertex_normals()
    box.paint_uniform_color([0.9, 0.1, 0.1])
    return Mesh.from_open3d(box)


def test_the_viewpoint_stands_behind_and_above_the_cameras() -> None:
    cams = np.stack([make_pose(np.eye(3), np.array([x, 0.0, 0.0])) for x in (-0.1, 0.1)])
    vertices = np.array([[0.0, 0.0, 2.0], [0.0, 0.0, 3.0]])
    eye, centre, up = viewpoint(vertices, cams)  # camera y points down: up is -y
    np.testing.assert_allclose(up, [0.0, -1.0, 0.0])
    np.testing.assert_allclose(centre, [0.0, 0.0, 2.5])
    assert eye[2] < 0 and eye[1] < 0  # behind (-z) and above (-y)


@pytest.mark.parametrize("renderer", ["open3d", "matplotlib"])
def test_the_picture_shows_the_mesh(
    o3d: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, renderer: str
) -> None:
    """A red box in front of the cameras fills the middle of the picture, in red, on
    white; with Open3D's renderer unavailable, matplotlib draws it."""
    if renderer == "matplotlib":
        def broken(*args: object) -> None:
            raise RuntimeError("Failed to load vulkan library!")

        monkeypatch.setattr(render, "_render_open3d", broken)
    cams = np.stack([np.eye(4)])
    used = render_mesh_png(_red_box(o3d), tmp_path / "box.png", cams, size=(320, 240))
    if renderer == "open3d" and used != "open3d":
        pytest.skip("Open3D's offscreen renderer does not start here (no Vulkan/EGL)")
    assert used == renderer
    img = cv2.imread(str(tmp_path / "box.png"))
    assert img is not None and img.shape == (240, 320, 3)
    b, g, r = (img[..., i].astype(int) for i in range(3))
    red = (r > 100) & (r > 2 * g) & (r > 2 * b)
    assert red[105:135, 140:180].mean() > 0.9 and red.mean() < 0.2  # the box, in the middle
    assert (img[:20, :20] > 200).all()  # the background

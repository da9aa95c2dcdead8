"""Maps whose keyframes hold rendered depth or stereo images of the synthetic room at
their true poses."""

from __future__ import annotations

import os
from functools import lru_cache
from types import ModuleType

import numpy as np
import pytest

from slam.camera.pinhole import Calibration
from slam.geometry.lie import se3_inv
from slam.map.map import Map
from slam.synthetic.scene import Scene
from slam.synthetic.source import make_synthetic_source
from tests.map.factories import make_frame, make_keyframe


@lru_cache(maxsize=8)
def _rendered(kind: str, sensor: str, n_frames: int, step: int, width: int, height: int
              ) -> tuple[Calibration, Scene, tuple[tuple[np.ndarray, ...], ...]]:
    src = make_synthetic_source(kind, sensor, n_frames=n_frames, width=width, height=height)
    gt = src.ground_truth()
    views = []
    for i in range(0, n_frames, step):
        sf = src.frame(i)
        views.append((se3_inv(gt.T_world_cam[i]), sf.image, sf.right, sf.depth_m))
    assert src.calibration is not None
    return src.calibration, src.scene, tuple(views)


def depth_map(kind: str = "forward", sensor: str = "rgbd", n_frames: int = 150, step: int = 10,
              width: int = 320, height: int = 240) -> tuple[Map, Calibration, Scene]:
    """A map of keyframes (every ``step``-th frame of the synthetic ``kind`` sequence) at
    their true poses, holding their grey image and depth image (rgbd) or stereo pair."""
    calib, scene, views = _rendered(kind, sensor, n_frames, step, width, height)
    m = Map()
    for T_cam_world, grey, right, depth in views:
        frame = make_frame(np.zeros((0, 2)), width=width, height=height)
        frame.image = grey
        frame.right_image = right
        frame.depth_image = depth
        make_keyframe(m, frame, np.asarray(T_cam_world, np.float64))
    return m, calib, scene


def open3d_or_skip() -> ModuleType:
    """The ``open3d`` module; the test is skipped locally when the ``dense`` extra is not
    installed, and fails in CI (``CI=true``), which installs it."""
    try:
        import open3d
    except (ImportError, OSError) as exc:
        message = f"Open3D (the 'dense' extra) is not installed: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI=true: the extra must be installed)")
        pytest.skip(message)
    return open3d

"""SyntheticSource: calibration, lazily rendered frames that match the renderer, URIs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import slam.synthetic.source as source_module
from slam.errors import DataSourceError, SensorError
from slam.io.sources.base import FrameSource
from slam.synthetic.render import render
from slam.synthetic.scene import room_scene
from slam.synthetic.source import make_synthetic_source, parse_synthetic_uri


@pytest.mark.parametrize("sensor", ["mono", "stereo", "rgbd"])
def test_calibration_and_frames(sensor: str) -> None:
    src = make_synthetic_source("sideways", sensor, n_frames=3)
    assert isinstance(src, FrameSource)
    assert src.name == "synthetic:sideways" and src.sensor == sensor and len(src) == 3
    calib = src.calibration
    assert calib is not None
    cam = calib.camera
    assert (cam.fx, cam.fy, cam.cx, cam.cy, cam.width, cam.height) == (
        500.0, 500.0, 319.5, 239.5, 640, 480)
    assert not cam.is_distorted and calib.fps == 30.0
    assert calib.baseline_m == (0.1 if sensor == "stereo" else None)
    assert calib.depth_factor == (1.0 if sensor == "rgbd" else None)
    if sensor != "mono":
        assert calib.stereo_bf == pytest.approx(50.0)
    gt = src.ground_truth()
    frames = list(src)
    assert [f.index for f in frames] == [0, 1, 2]
    np.testing.assert_allclose([f.timestamp for f in frames], gt.stamps)
    np.testing.assert_allclose(gt.stamps, np.arange(3) / 30.0)
    image, depth = render(room_scene(0), cam, gt.T_world_cam[2])
    np.testing.assert_array_equal(frames[2].image, image)
    assert (frames[2].right is not None) == (sensor == "stereo")
    assert (frames[2].depth_m is not None) == (sensor == "rgbd")
    if sensor == "rgbd":
        assert frames[2].depth_m is not None and frames[2].depth_m.dtype == np.float32
        np.testing.assert_array_equal(frames[2].depth_m, depth)


def test_frames_are_rendered_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = source_module.render

    def counting_render(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(source_module, "render", counting_render)
    src = make_synthetic_source("loop", "mono", n_frames=50, width=160, height=120)
    it = iter(src)
    assert calls == []
    first = next(it)
    assert len(calls) == 1 and first.image.shape == (120, 160)
    assert src.calibration is not None and src.calibration.camera.fx == pytest.approx(125.0)


def test_noise_is_deterministic_per_seed() -> None:
    a = make_synthetic_source("forward", "mono", n_frames=2, noise_sigma=2.0).frame(1).image
    b = make_synthetic_source("forward", "mono", n_frames=2, noise_sigma=2.0).frame(1).image
    clean = make_synthetic_source("forward", "mono", n_frames=2).frame(1).image
    np.testing.assert_array_equal(a, b)
    assert 1.0 < np.std(a.astype(float) - clean) < 3.0


def test_parse_uri() -> None:
    src = parse_synthetic_uri("synthetic:forward?n_frames=4&width=320&height=240", "rgbd")
    assert len(src) == 4 and src.name == "synthetic:forward" and src.sensor == "rgbd"
    assert src.calibration is not None and src.calibration.camera.width == 320
    assert len(parse_synthetic_uri("synthetic:loop", "mono")) == 300
    for bad in ("synthetic:spiral", "tum:loop", "synthetic:loop?n_frames=x",
                "synthetic:loop?colour=1", "synthetic:loop?n_frames=1", "synthetic:loop?&&=",
                "synthetic:loop?noise=nan"):
        with pytest.raises(DataSourceError):
            parse_synthetic_uri(bad, "mono")
    with pytest.raises(SensorError):
        parse_synthetic_uri("synthetic:loop", "lidar")

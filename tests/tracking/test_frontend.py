"""FrameBuilder: features, undistortion and per-keypoint depth for each sensor."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import cv2
import numpy as np
import pytest

from slam.camera.pinhole import Calibration, PinholeCamera
from slam.errors import ImageError, SensorError
from slam.features.stereo import depth_from_image
from slam.tracking.frontend import FrameBuilder
from tests.map.factories import feature_config, synthetic_calibration, synthetic_sensor_frame


@pytest.fixture(scope="module")
def rgbd_builder() -> Iterator[FrameBuilder]:
    b = FrameBuilder(synthetic_calibration("rgbd"), feature_config(), "rgbd")
    yield b
    b.close()


def test_rgbd_frame_depths_and_virtual_right(rgbd_builder: FrameBuilder) -> None:
    sf = synthetic_sensor_frame("rgbd", 3)
    assert sf.depth_m is not None
    f = rgbd_builder.build(sf, 7)
    assert f.id == 7 and f.timestamp == sf.timestamp and (f.width, f.height) == (320, 240)
    assert len(f) == 1000 and f.point_ids.tolist() == [-1] * 1000
    # No distortion: ideal pixels are the raw ones, so depth is read at f.uv.
    np.testing.assert_array_equal(f.depth_m, depth_from_image(f.uv, sf.depth_m))
    ok = f.depth_m > 0
    assert ok.mean() > 0.99
    np.testing.assert_allclose(f.u_right[ok], f.uv[ok, 0] - 25.0 / f.depth_m[ok])
    assert np.all(f.u_right[~ok] == -1.0)
    np.testing.assert_allclose(f.inv_sigma2, 1.2 ** (-2.0 * f.octave))


def test_init_extracts_more(rgbd_builder: FrameBuilder) -> None:
    sf = synthetic_sensor_frame("rgbd", 3)
    n = len(rgbd_builder.build(sf, 0))
    n_init = len(rgbd_builder.build(sf, 0, for_init=True))
    assert n_init > 1.5 * n


def test_stereo_frame_depth_matches_rendered_depth() -> None:
    b = FrameBuilder(synthetic_calibration("stereo"), feature_config(), "stereo")
    try:
        f = b.build(synthetic_sensor_frame("stereo", 4), 0)
    finally:
        b.close()
    depth = synthetic_sensor_frame("rgbd", 4).depth_m
    assert depth is not None
    ok = f.depth_m > 0
    assert ok.mean() > 0.45
    np.testing.assert_array_equal(ok, f.u_right >= 0)
    np.testing.assert_allclose(f.depth_m[ok], 25.0 / (f.uv[ok, 0] - f.u_right[ok]))
    rel = np.abs(f.depth_m[ok] / depth_from_image(f.uv[ok], depth) - 1.0)
    assert np.median(rel) < 0.03
    assert np.mean(rel < 0.2) > 0.95


def test_mono_frame_has_no_depth() -> None:
    calib = dataclasses.replace(synthetic_calibration("rgbd"), bf=None)
    b = FrameBuilder(calib, feature_config(), "mono")
    f = b.build(synthetic_sensor_frame("rgbd", 3), 0)
    assert np.all(f.depth_m == -1.0) and np.all(f.u_right == -1.0)


def test_distorted_camera_gives_undistorted_pixels() -> None:
    cam0 = synthetic_calibration("rgbd").camera
    cam = PinholeCamera(cam0.fx, cam0.fy, cam0.cx, cam0.cy, cam0.width, cam0.height,
                        dist=(-0.2, 0.05, 0.001, -0.001, 0.0))
    b = FrameBuilder(Calibration(cam), feature_config(), "mono")
    image = synthetic_sensor_frame("rgbd", 3).image
    f = b.build(synthetic_sensor_frame("rgbd", 3), 0)
    raw = b.extractor.extract(image).uv_raw
    ref = cv2.undistortPoints(raw.reshape(-1, 1, 2), cam.K, np.array(cam.dist), P=cam.K)
    np.testing.assert_allclose(f.uv, ref.reshape(-1, 2), atol=1e-3)
    assert np.abs(f.uv - raw).max() > 1.0


def test_input_errors() -> None:
    calib = synthetic_calibration("rgbd")
    sf = synthetic_sensor_frame("rgbd", 3)
    b = FrameBuilder(calib, feature_config(), "rgbd")
    with pytest.raises(ImageError):
        b.build(dataclasses.replace(sf, image=sf.image[:200]), 0)
    with pytest.raises(SensorError):
        b.build(dataclasses.replace(sf, depth_m=None), 0)
    stereo = FrameBuilder(synthetic_calibration("stereo"), feature_config(), "stereo")
    try:
        with pytest.raises(SensorError):
            stereo.build(sf, 0)  # no right image
    finally:
        stereo.close()
    with pytest.raises(SensorError):
        FrameBuilder(Calibration(calib.camera), feature_config(), "rgbd")


# --- prefetch ------------------------------------------------------------------------------
def _same_frame(a: object, b: object) -> None:
    for name in ("uv", "octave", "descriptors", "depth_m", "u_right", "inv_sigma2"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


@pytest.mark.parametrize("sensor", ["rgbd", "stereo", "mono"])
def test_prefetched_frames_equal_frames_built_in_place(sensor: str) -> None:
    b = FrameBuilder(synthetic_calibration(sensor), feature_config(), sensor)  # type: ignore[arg-type]
    try:
        frames = [synthetic_sensor_frame(sensor, i) for i in range(3)]
        direct = [b.build(sf, i) for i, sf in enumerate(frames)]
        b.prefetch(frames[0])
        for i, sf in enumerate(frames):
            if i + 1 < len(frames):
                b.prefetch(frames[i + 1])  # the next one, before this one is built
            _same_frame(b.build(sf, i), direct[i])
        assert b.clock.summary()["wait_prefetch"]["n"] == 3  # every one was prefetched
    finally:
        b.close()


@pytest.fixture()
def fresh_builder() -> Iterator[FrameBuilder]:
    b = FrameBuilder(synthetic_calibration("rgbd"), feature_config(), "rgbd")
    yield b
    b.close()


def test_prefetch_for_the_wrong_extractor_or_frame_is_redone(fresh_builder: FrameBuilder) -> None:
    rgbd_builder = fresh_builder
    sf, other = synthetic_sensor_frame("rgbd", 1), synthetic_sensor_frame("rgbd", 2)
    n_init = len(rgbd_builder.build(sf, 0, for_init=True))
    rgbd_builder.prefetch(sf)  # with the regular extractor ...
    assert len(rgbd_builder.build(sf, 0, for_init=True)) == n_init  # ... redone for init
    rgbd_builder.prefetch(other)
    _same_frame(rgbd_builder.build(sf, 0), rgbd_builder.build(sf, 0))  # not the other's
    _same_frame(rgbd_builder.build(other, 1), rgbd_builder.build(other, 1))


def test_prefetch_errors_come_with_the_frame(fresh_builder: FrameBuilder) -> None:
    rgbd_builder = fresh_builder
    bad = dataclasses.replace(synthetic_sensor_frame("rgbd", 1), depth_m=None)
    rgbd_builder.prefetch(bad)
    with pytest.raises(SensorError, match="depth image"):
        rgbd_builder.build(bad, 0)
    good = synthetic_sensor_frame("rgbd", 2)
    rgbd_builder.prefetch(good)
    assert len(rgbd_builder.build(good, 1)) > 0

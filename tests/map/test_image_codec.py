"""Keyframe images in map files: compressed colour, grey and depth images round-trip;
format version 1 files (raw colour) load; an image that does not decode is reported."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from slam.map import persistence
from slam.map.persistence import FORMAT_VERSION, load_map, save_map
from tests.map.test_persistence import (
    CALIB,
    CALIB_VGA,
    _raises,
    assert_maps_equal,
    build_map,
    depth_image,
    rich_map,
)

log = logging.getLogger(__name__)


# --- keyframe images (format version 2) and version 1 files --------------------------------
V1_FILE = Path(__file__).parent / "data" / "v1_rgbd.map"


def _v1_colours() -> tuple[np.ndarray, np.ndarray]:
    """The colour images tests/map/data/v1_rgbd.map was written with (format version 1)."""
    yy, xx = np.mgrid[0:240, 0:320]
    return (np.stack([xx * 8, yy * 10, (xx + yy) * 4], -1).astype(np.uint8),
            (xx * 7 + yy).astype(np.uint8))


def test_a_version_1_file_loads_with_its_colour_images(tmp_path: Path) -> None:
    """A map saved by format version 1 (raw colour, no other images) loads, and saved
    again it becomes version 2 with the same content."""
    loaded = load_map(V1_FILE, calibration=CALIB, sensor="rgbd")
    assert loaded.info.format_version == 1 and loaded.extra == {"made_by": "format version 1"}
    m = loaded.map
    assert list(m.keyframes) == [0, 1, 2, 3] and m.keyframes[3].bad and m.n_points() == 30
    rgb, grey = _v1_colours()
    np.testing.assert_array_equal(m.keyframes[1].frame.color, rgb)
    np.testing.assert_array_equal(m.keyframes[2].frame.color, grey)
    for kf in m.keyframes.values():
        f = kf.frame
        assert f.depth_image is None and f.image is None and f.right_image is None
        assert (kf.id in (1, 2)) == (f.color is not None)
    save_map(tmp_path / "v2.map", m, CALIB, "rgbd", color_quality=None)
    again = load_map(tmp_path / "v2.map")
    assert again.info.format_version == FORMAT_VERSION == 2
    assert_maps_equal(m, again.map, color_atol=0)


def _camera_images(n: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(colour BGR, grey, depth metres) of ``n`` 640x480 views of the synthetic room."""
    from slam.synthetic.source import make_synthetic_source

    src = make_synthetic_source("forward", "rgbd", n_frames=n)
    out = []
    for sf in src:
        assert sf.depth_m is not None
        tint = np.linspace(0.6, 1.0, sf.image.shape[1])[None, :, None] * [0.7, 1.0, 0.85]
        colour = (sf.image[:, :, None] * tint).astype(np.uint8)  # camera-like: smooth chroma
        out.append((colour, sf.image, sf.depth_m))
    return out


def test_keyframe_images_are_compressed(tmp_path: Path) -> None:
    """640x480 colour (JPEG), grey (PNG) and depth (16-bit PNG) round-trip: grey exactly,
    depth within half a 0.2 mm step, colour close; the file is far below the raw bytes."""
    m = build_map(3, 30, 50)
    views = _camera_images(3)
    for kf, (colour, grey, depth) in zip(m.keyframes.values(), views):
        kf.frame.color, kf.frame.image, kf.frame.depth_image = colour, grey, depth
        kf.frame.width, kf.frame.height = 640, 480
    raw_bytes = sum(c.nbytes + g.nbytes + d.nbytes for c, g, d in views)
    save_map(tmp_path / "m.map", m, CALIB_VGA, "rgbd")
    size = (tmp_path / "m.map").stat().st_size
    log.warning("3 keyframes of 640x480 colour, grey and depth: %.2f MB raw, %.2f MB file",
                raw_bytes / 1e6, size / 1e6)
    assert size < 0.35 * raw_bytes
    loaded = load_map(tmp_path / "m.map").map
    for kf, (colour, grey, depth) in zip(loaded.keyframes.values(), views):
        f = kf.frame
        assert f.depth_image is not None and f.color is not None
        np.testing.assert_array_equal(f.image, grey)
        assert f.depth_image.dtype == np.float32 and f.depth_image.shape == depth.shape
        assert np.abs(f.depth_image - depth).max() <= 0.5 / 5000 + 1e-6
        np.testing.assert_array_equal(f.depth_image == 0, depth == 0)
        psnr = cv2.PSNR(f.color, colour)
        assert psnr > 35.0, psnr
    save_map(tmp_path / "lossless.map", m, CALIB_VGA, "rgbd", color_quality=None)
    for ka, kb in zip(m.keyframes.values(), load_map(tmp_path / "lossless.map").map.keyframes
                      .values()):
        np.testing.assert_array_equal(ka.frame.color, kb.frame.color)


def test_deep_and_missing_depth_readings(tmp_path: Path) -> None:
    """Depth beyond 13.1 m gets a coarser step instead of overflowing; NaN and negative
    readings are stored as 0 (no reading); TUM depth round-trips exactly."""
    m = build_map(3, 30, 50)
    far = np.full((240, 320), 40.0, np.float32)
    far[0, :4] = [np.nan, -1.0, 0.0, 65.5]
    m.keyframes[0].frame.depth_image = far
    tum = depth_image((240, 320), 9)
    m.keyframes[1].frame.depth_image = tum
    save_map(tmp_path / "m.map", m, CALIB, "rgbd")
    loaded = load_map(tmp_path / "m.map").map
    got = loaded.keyframes[0].frame.depth_image
    assert got is not None
    np.testing.assert_array_equal(got[0, :3], [0.0, 0.0, 0.0])
    step = 65.5 / 65535
    assert abs(got[0, 3] - 65.5) <= step and np.abs(got[1:] - 40.0).max() <= step
    np.testing.assert_array_equal(loaded.keyframes[1].frame.depth_image, tum)


def test_an_image_that_does_not_decode_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    encode = persistence.encode_image_arrays

    def broken(*args: Any, **kwargs: Any) -> Any:
        arrays = encode(*args, **kwargs)
        data = arrays["depth.data"].copy()
        data[len(data) // 2:] = 0
        return arrays | {"depth.data": data}

    m = rich_map()
    monkeypatch.setattr(persistence, "encode_image_arrays", broken)
    save_map(tmp_path / "bad.map", m, CALIB, "rgbd")
    _raises(tmp_path / "bad.map", "inconsistent", "depth image")

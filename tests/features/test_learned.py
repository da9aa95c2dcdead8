"""The learned descriptor at run time (cv2.dnn, shipped model; no torch)."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

from slam.camera import Calibration, PinholeCamera
from slam.config import FeatureConfig
from slam.errors import ConfigError, ImageError
from slam.features.learned import LearnedDescriptor, models_dir, pack_signs
from slam.features.matching import hamming_rows
from slam.features.orb import OrbExtractor
from slam.io.types import SensorFrame
from slam.tracking.frontend import FrameBuilder


@pytest.fixture(scope="module")
def describer() -> LearnedDescriptor:
    return LearnedDescriptor()


def _scene(h: int = 240, w: int = 320, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((h, w), 90, np.uint8)
    for _ in range(60):
        x, y = int(rng.integers(10, w - 10)), int(rng.integers(10, h - 10))
        c = int(rng.integers(0, 256))
        if rng.random() < 0.5:
            cv2.rectangle(img, (x, y), (x + int(rng.integers(5, 30)), y + int(rng.integers(5, 30))),
                          c, -1)
        else:
            cv2.circle(img, (x, y), int(rng.integers(3, 15)), c, -1)
    return cv2.GaussianBlur(img, (3, 3), 0)


def test_pack_signs_bit_layout_and_hamming() -> None:
    logits = -np.ones((2, 256), np.float32)
    logits[0, [0, 9, 255]] = 1.0
    logits[1, 0] = 0.0  # zero counts as a set bit
    packed = pack_signs(logits)
    assert packed.shape == (2, 32) and packed.dtype == np.uint8
    assert packed[0, 0] == 1 and packed[0, 1] == 2 and packed[0, 31] == 128
    assert hamming_rows(packed[:1], packed[1:]).tolist() == [2]


def test_descriptors_of_orb_keypoints(describer: LearnedDescriptor) -> None:
    img = _scene()
    kp = OrbExtractor(FeatureConfig.model_validate({}), 300).extract(img)
    desc = describer.compute(img, kp.uv_raw, kp.octave, kp.angle)
    assert desc.shape == (len(kp), 32) and desc.dtype == np.uint8
    # real descriptors: bits vary across keypoints
    bits = np.unpackbits(desc, axis=1)
    assert 0.2 < bits.mean() < 0.8
    assert len({row.tobytes() for row in desc}) > 0.9 * len(desc)
    again = describer.describe(img, kp)
    np.testing.assert_array_equal(again.descriptors, desc)
    np.testing.assert_array_equal(again.uv_raw, kp.uv_raw)
    empty = describer.compute(img, np.zeros((0, 2)), np.zeros(0, np.int32),
                              np.zeros(0, np.float32))
    assert empty.shape == (0, 32)
    with pytest.raises(ImageError):
        describer.compute(img.astype(np.float32), kp.uv_raw, kp.octave, kp.angle)  # type: ignore[arg-type]


def test_rotating_the_image_keeps_the_descriptors(describer: LearnedDescriptor) -> None:
    img = _scene(200, 200, seed=1)
    kp = OrbExtractor(FeatureConfig.model_validate({}), 200).extract(img)
    inner = np.all((kp.uv_raw > 50) & (kp.uv_raw < 150), axis=1)
    uv, octave, angle = kp.uv_raw[inner], kp.octave[inner], kp.angle[inner]
    d0 = describer.compute(img, uv, octave, angle)
    rot = np.ascontiguousarray(np.rot90(img))  # (u, v) -> (v, W-1-u), angle - 90
    uv_rot = np.stack([uv[:, 1], img.shape[1] - 1 - uv[:, 0]], axis=1)
    d1 = describer.compute(rot, uv_rot, octave, (angle - 90.0).astype(np.float32))
    # pyramid levels of a rotated image differ by rounding: allow a few bits
    assert np.median(hamming_rows(d0, d1)) <= 12
    other = np.roll(d1, 1, axis=0)
    assert np.median(hamming_rows(d0, other)) > 60


def test_threads_get_their_own_network(describer: LearnedDescriptor) -> None:
    img = _scene(seed=2)
    kp = OrbExtractor(FeatureConfig.model_validate({}), 300).extract(img)
    want = describer.compute(img, kp.uv_raw, kp.octave, kp.angle)
    got: list[np.ndarray] = []

    def work() -> None:
        got.append(describer.compute(img, kp.uv_raw, kp.octave, kp.angle))

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 3 and all(np.array_equal(g, want) for g in got)


def test_missing_or_wrong_model_is_a_config_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="not found"):
        LearnedDescriptor(tmp_path / "none.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="cannot load"):
        LearnedDescriptor(bad)
    assert (models_dir() / "descriptor.onnx").is_file()


def test_frame_builder_describes_orb_keypoints_with_the_network() -> None:
    cam = PinholeCamera(300.0, 300.0, 160.0, 120.0, 320, 240)
    calib = Calibration(cam, bf=30.0, depth_factor=1.0)
    img = _scene(seed=3)
    depth = np.full(img.shape, 2.0, np.float32)
    sf = SensorFrame(index=0, timestamp=0.0, image=img, depth_m=depth)
    cfg = FeatureConfig.model_validate({"n_features": 300, "descriptor": "learned"})
    frame = FrameBuilder(calib, cfg, "rgbd").build(sf, 0)
    kp = OrbExtractor(cfg, 300).extract(img)
    want = LearnedDescriptor().compute(img, kp.uv_raw, kp.octave, kp.angle)
    np.testing.assert_array_equal(frame.descriptors, want)
    plain = FeatureConfig.model_validate({"n_features": 300})
    orb = FrameBuilder(calib, plain, "rgbd").build(sf, 0)
    np.testing.assert_array_equal(orb.descriptors, kp.descriptors)

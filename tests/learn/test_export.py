"""ONNX export: cv2.dnn at run time gives what torch gives (descriptor bits, embedding)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import Tensor, nn  # noqa: E402

pytest.importorskip("onnx")

from slam.config import FeatureConfig  # noqa: E402
from slam.features.learned import LearnedDescriptor  # noqa: E402
from slam.features.orb import OrbExtractor  # noqa: E402
from slam.features.patches import PatchSampler  # noqa: E402
from slam.learn.export import export_descriptor, export_embedding  # noqa: E402
from slam.learn.models import DescriptorNet, EmbeddingNet, standardize  # noqa: E402
from slam.place.embedding_input import embed_image  # noqa: E402
from slam.place.learned import LearnedPlaceRecognizer  # noqa: E402


def _image(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.uniform(0, 255, (240, 320)).astype(np.float32), (0, 0), 2.5)
    return ((img - img.min()) / (img.max() - img.min()) * 255).astype(np.uint8)


def _warm_batchnorm(model: nn.Module, x: Tensor) -> None:
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x)
    model.eval()


def test_descriptor_runtime_bits_equal_torch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    img = _image()
    kp = OrbExtractor(FeatureConfig.model_validate({}), 300).extract(img)
    model = DescriptorNet(support=40.0)
    sampler = PatchSampler(support=40.0)
    patches = torch.from_numpy(sampler.sample(img, kp.uv_raw, kp.octave, kp.angle)).float()
    x = standardize(patches[:, None])
    _warm_batchnorm(model, x)
    err = export_descriptor(model, tmp_path / "d.onnx", {"note": "test"})
    assert err < 1e-4
    meta = json.loads((tmp_path / "d.json").read_text())
    assert meta["patch_support"] == 40.0 and meta["note"] == "test"
    with torch.no_grad():
        logits = model(x).numpy()
    want = np.packbits(logits >= 0, axis=1, bitorder="little")
    got = LearnedDescriptor(tmp_path / "d.onnx").compute(img, kp.uv_raw, kp.octave, kp.angle)
    differ = np.unpackbits(got ^ want).mean()
    assert differ < 1e-3  # only logits within float noise of zero may flip


def test_embedding_runtime_equals_torch(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = EmbeddingNet()
    imgs = np.stack([embed_image(_image(s)) for s in range(4)])
    x = standardize(torch.from_numpy(imgs).float()[:, None])
    _warm_batchnorm(model, x)
    export_embedding(model, tmp_path / "e.onnx", {})
    with torch.no_grad():
        want = model(x).numpy()
    rec = LearnedPlaceRecognizer(tmp_path / "e.onnx")
    got = np.stack([rec.embed(_image(s)) for s in range(4)])
    np.testing.assert_allclose(got, want, atol=1e-4)

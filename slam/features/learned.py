"""Our learned binary descriptor at run time, through OpenCV's dnn module (no torch).

For ORB keypoints (position, octave, angle) it samples oriented, scaled 32x32 patches
(:class:`slam.features.patches.PatchSampler`, written straight in the network's
space-to-depth layout), standardises them, runs the exported network and packs the
signs of its 256 outputs into (N, 32) uint8 rows: the layout of ORB's descriptors, so
the Hamming matchers and the bag-of-words code take them unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from slam.data import MODELS_DIR, data_file
from slam.errors import ConfigError, ImageError
from slam.features.orb import Keypoints
from slam.features.patches import PATCH_SIZE, UNSHUFFLE, PatchSampler, standardize

log = logging.getLogger(__name__)

DEFAULT_DESCRIPTOR_MODEL = "descriptor.onnx"


def models_dir() -> Path:
    """The folder of the models shipped in the package (``slam/data/models/``)."""
    return data_file(MODELS_DIR)


def read_model(path: str | Path | None, default_name: str) -> tuple[bytes, dict[str, Any], Path]:
    """ONNX bytes and the JSON beside it (empty when missing) of ``path`` (None or "":
    the shipped ``slam/data/models/<default_name>``). Raises ConfigError when the file is
    missing."""
    p = Path(path) if path else data_file(MODELS_DIR, default_name)
    if not p.is_file():
        raise ConfigError(f"learned model not found: {p}")
    meta_path = (p.with_suffix(".json") if path
                 else data_file(MODELS_DIR, Path(default_name).with_suffix(".json").name))
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return p.read_bytes(), meta, p


class DnnRunner:
    """One ``cv2.dnn`` network per thread (a Net is not safe to share between threads)."""

    def __init__(self, onnx: bytes, name: str) -> None:
        self._onnx = np.frombuffer(onnx, np.uint8)
        self._name = name
        self._local = threading.local()
        self.forward(None)  # parse now: a bad file fails at start-up

    def forward(self, x: NDArray[np.float32] | None) -> NDArray[np.float32]:
        """Output of the network for the input batch ``x`` (empty when ``x`` is None)."""
        net = getattr(self._local, "net", None)
        if net is None:
            try:
                net = cv2.dnn.readNetFromONNX(self._onnx)
            except cv2.error as exc:
                raise ConfigError(f"cannot load the ONNX model {self._name}: {exc}") from exc
            self._local.net = net
        if x is None:
            return np.zeros(0, np.float32)
        net.setInput(x)
        return np.asarray(net.forward(), np.float32)


class LearnedDescriptor:
    """256-bit descriptors of ORB keypoints by the network at ``model_path`` (None or "":
    the shipped one). ``scale_factor`` and ``n_levels`` are the ORB pyramid's."""

    def __init__(self, model_path: str | Path | None = None, scale_factor: float = 1.2,
                 n_levels: int = 8) -> None:
        onnx, meta, self.path = read_model(model_path, DEFAULT_DESCRIPTOR_MODEL)
        if meta.get("kind", "descriptor") != "descriptor":
            raise ConfigError(f"{self.path} is not a descriptor model ({meta.get('kind')})")
        if int(meta.get("bits", 256)) != 256:
            raise ConfigError(f"{self.path}: the matchers need 256-bit descriptors")
        self.eps = float(meta.get("standardize_eps", 1.0))
        size = int(meta.get("patch_size", PATCH_SIZE))
        self.sampler = PatchSampler(scale_factor, n_levels, size,
                                    int(meta.get("unshuffle", UNSHUFFLE)),
                                    float(meta.get("patch_support", size)))
        self.runner = DnnRunner(onnx, str(self.path))
        log.info("learned descriptor %s", self.path)

    def compute(self, image: NDArray[np.uint8], uv_raw: NDArray[np.float64],
                octave: NDArray[np.int32], angle: NDArray[np.float32]) -> NDArray[np.uint8]:
        """Descriptors (N, 32) uint8 of keypoints at raw pixels ``uv_raw`` (N, 2) with their
        octaves (N,) and angles (N,) degrees in the grey image (H, W) uint8."""
        if image is None or image.dtype != np.uint8 or image.ndim != 2:
            raise ImageError("the learned descriptor needs a grey uint8 image (H, W)")
        if len(uv_raw) == 0:
            return np.zeros((0, 32), np.uint8)
        patches = self.sampler.sample(image, uv_raw, octave, angle)
        logits = self.runner.forward(standardize(patches, self.eps))
        return pack_signs(logits)

    def describe(self, image: NDArray[np.uint8], kp: Keypoints) -> Keypoints:
        """``kp`` with its descriptors replaced by the learned ones."""
        desc = self.compute(image, kp.uv_raw, kp.octave, kp.angle)
        return dataclasses.replace(kp, descriptors=desc)


def pack_signs(logits: NDArray[np.float32]) -> NDArray[np.uint8]:
    """Bits ``logits >= 0`` of (N, 256) values packed into (N, 32) uint8, bit k of the
    descriptor in byte k // 8 at position k % 8 (little-endian bit order)."""
    bits = np.ascontiguousarray(logits >= 0)
    return np.packbits(bits, axis=1, bitorder="little")

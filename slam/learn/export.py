"""ONNX export of the trained networks, checked against OpenCV's dnn module.

The descriptor's exported graph is :attr:`DescriptorNet.body`: input ``patches``
(N, 16, 8, 8) float32 (standardised patches, space-to-depth), output ``logits``
(N, 256) whose signs are the bits. The embedding's graph takes ``image`` (N, 1, 120, 160)
float32 (standardised grey) and gives ``embedding`` (N, 256), unit length. A JSON file
beside each model (same name, ``.json``) records what the runtime needs to feed it.
"""

from __future__ import annotations

import io
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slam.errors import SlamError
from slam.features.patches import PATCH_SIZE
from slam.learn.models import DescriptorNet, EmbeddingNet
from slam.place.embedding_input import EMBED_SIZE

log = logging.getLogger(__name__)

OPSET = 13


def _to_onnx(module: nn.Module, example: torch.Tensor, input_name: str, output_name: str
             ) -> bytes:
    buf = io.BytesIO()
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated, not gone
        torch.onnx.export(module, (example,), buf,  # type: ignore[arg-type]
                          dynamo=False, opset_version=OPSET,
                          input_names=[input_name], output_names=[output_name],
                          dynamic_axes={input_name: {0: "n"}, output_name: {0: "n"}})
    return buf.getvalue()


def check_with_opencv(onnx_bytes: bytes, module: nn.Module, example: torch.Tensor,
                      atol: float = 1e-3) -> float:
    """Max absolute difference between torch and ``cv2.dnn`` on ``example``; raises
    SlamError above ``atol``."""
    import cv2

    net = cv2.dnn.readNetFromONNX(np.frombuffer(onnx_bytes, np.uint8))
    x = example.detach().cpu().numpy().astype(np.float32)
    net.setInput(x)
    got = net.forward()
    with torch.no_grad():
        want = module(example).detach().cpu().numpy()
    err = float(np.abs(got - want).max())
    if not err <= atol:
        raise SlamError(f"cv2.dnn disagrees with torch on the exported model (max error {err})")
    return err


def _write(path: Path, onnx_bytes: bytes, meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(onnx_bytes)
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    log.info("wrote %s (%d bytes) and its .json", path, len(onnx_bytes))


def export_descriptor(model: DescriptorNet, path: Path, meta: dict[str, Any]) -> float:
    """Write ``path`` (ONNX) and ``path.json``; returns cv2.dnn's max error."""
    model = model.cpu().eval()
    r = model.unshuffle
    example = torch.randn(7, r * r, PATCH_SIZE // r, PATCH_SIZE // r,
                          generator=torch.Generator().manual_seed(0))
    data = _to_onnx(model.body, example, "patches", "logits")
    err = check_with_opencv(data, model.body, example)
    _write(path, data, {"kind": "descriptor", "patch_size": PATCH_SIZE, "unshuffle": r,
                        "patch_support": model.config["support"],
                        "bits": model.config["bits"], "standardize_eps": 1.0,
                        "model": model.config, "opencv_max_error": err, **meta})
    return err


def export_embedding(model: EmbeddingNet, path: Path, meta: dict[str, Any]) -> float:
    """Write ``path`` (ONNX) and ``path.json``; returns cv2.dnn's max error."""
    model = model.cpu().eval()
    w, h = EMBED_SIZE
    example = torch.randn(3, 1, h, w, generator=torch.Generator().manual_seed(0))
    data = _to_onnx(model, example, "image", "embedding")
    err = check_with_opencv(data, model, example)
    _write(path, data, {"kind": "embedding", "width": w, "height": h,
                        "dim": model.config["dim"], "standardize_eps": 1.0,
                        "model": model.config, "opencv_max_error": err, **meta})
    return err

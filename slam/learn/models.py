"""The two networks (PyTorch; training only).

* :class:`DescriptorNet`: 32x32 keypoint patch -> 256 real values whose signs are the
  bits of a binary descriptor. Space-to-depth (``pixel_unshuffle`` by 4) first, so the
  exported body takes ``(N, 16, 8, 8)``, the layout :class:`PatchSampler` writes, then a
  pointwise stem, depthwise-separable convolutions with batch norm and residual
  connections, a grouped 4x4 head and a linear layer to 256.
* :class:`EmbeddingNet`: a small image -> L2-normalised 256-D place embedding: a strided
  stem, depthwise-separable residual stages, a 1x1 projection, GeM pooling.

:func:`ste_sign` is the straight-through sign used in training.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

DESCRIPTOR_BITS = 256
EMBEDDING_DIM = 256


class _SignSTE(torch.autograd.Function):
    """Forward: sign (+1 for x >= 0, else -1). Backward: the gradient of hardtanh
    (pass-through where |x| <= 1, zero outside)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)


def ste_sign(x: Tensor) -> Tensor:
    """Sign of ``x`` (values in {-1, +1}) with a straight-through gradient."""
    out: Tensor = _SignSTE.apply(x)  # type: ignore[no-untyped-call]
    return out


def standardize(x: Tensor, eps: float = 1.0) -> Tensor:
    """Per-sample zero mean, unit std over all but the batch axis (as
    :func:`slam.features.patches.standardize`; ``x`` in grey levels)."""
    flat = x.flatten(1)
    mean = flat.mean(dim=1)
    std = (flat.pow(2).mean(dim=1) - mean.pow(2)).clamp_min(0).sqrt()
    shape = (-1,) + (1,) * (x.dim() - 1)
    return (x - mean.view(shape)) / (std.view(shape) + eps)


def _dw_separable(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, 3, stride, 1, groups=c_in, bias=False), nn.BatchNorm2d(c_in),
        nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
    )


class Residual(nn.Module):
    """``x + f(x)`` with ``f`` a depthwise-separable block of ``channels``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = _dw_separable(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = x + self.body(x)
        return out


class DescriptorNet(nn.Module):
    """Patch (N, 1, 32, 32) standardised grey -> (N, 256) pre-sign values.

    ``widths`` = channels at 8x8 and at 4x4; the head is a depthwise 4x4 convolution (one
    learnt spatial pooling per channel: cheap in cv2.dnn, where grouped or wide heads
    cost several milliseconds) and a linear layer to the bits. :attr:`body` is what is
    exported (input (N, 16, 8, 8)).
    """

    unshuffle = 4

    def __init__(self, widths: tuple[int, int] = (24, 48), bits: int = DESCRIPTOR_BITS,
                 support: float = 32.0) -> None:
        super().__init__()
        a, b = widths
        r2 = self.unshuffle * self.unshuffle
        # support: pixels of the pyramid level the patches span (used by the sampler)
        self.config = {"widths": list(widths), "bits": bits, "support": support}
        self.body = nn.Sequential(
            nn.Conv2d(r2, a, 1, bias=False), nn.BatchNorm2d(a), nn.ReLU(inplace=True),
            Residual(a),
            _dw_separable(a, b, 2),
            Residual(b),
            nn.Conv2d(b, b, 4, groups=b, bias=False), nn.BatchNorm2d(b),
            nn.Flatten(), nn.Linear(b, bits),
        )

    def forward(self, patches: Tensor) -> Tensor:
        out: Tensor = self.body(F.pixel_unshuffle(patches, self.unshuffle))
        return out


class GeM(nn.Module):
    """Generalised mean pooling ``(mean x^p)^(1/p)`` over space, ``p`` learnt (from 3)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor([p]))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        pooled = x.clamp_min(self.eps).pow(self.p).mean(dim=(2, 3))
        out: Tensor = pooled.pow(1.0 / self.p)
        return out


class EmbeddingNet(nn.Module):
    """Image (N, 1, 120, 160) standardised grey -> (N, 256) unit vectors."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128),
                 dim: int = EMBEDDING_DIM) -> None:
        super().__init__()
        self.config = {"widths": list(widths), "dim": dim}
        layers: list[nn.Module] = [nn.Conv2d(1, widths[0], 3, 2, 1, bias=False),
                                   nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)]
        for c_in, c_out in itertools.pairwise(widths):
            layers += [_dw_separable(c_in, c_out, 2), Residual(c_out)]
        layers += [nn.Conv2d(widths[-1], dim, 1, bias=False), nn.BatchNorm2d(dim),
                   nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.pool = GeM()
        self.whiten = nn.Linear(dim, dim)

    def forward(self, images: Tensor) -> Tensor:
        x = self.whiten(self.pool(self.features(images)))
        return F.normalize(x, dim=1)


def head_and_stem(model: nn.Module) -> set[int]:
    """ids of the first and last weight matrices of ``model`` (kept on AdamW by Muon's
    convention: the input stem and the output layer are not hidden layers)."""
    mats = [p for p in model.parameters() if p.ndim >= 2]
    return {id(mats[0]), id(mats[-1])} if mats else set()

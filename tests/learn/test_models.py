"""The networks: layouts shared with the runtime, shapes, GeM, unit embeddings."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from slam.features.patches import standardize as np_standardize  # noqa: E402
from slam.features.patches import unshuffle_patches  # noqa: E402
from slam.learn.models import (  # noqa: E402
    DescriptorNet,
    EmbeddingNet,
    GeM,
    standardize,
)


def test_descriptor_body_takes_the_runtime_layout() -> None:
    torch.manual_seed(0)
    net = DescriptorNet().eval()
    patches = np.random.default_rng(0).integers(0, 256, (5, 32, 32)).astype(np.uint8)
    x = standardize(torch.from_numpy(patches).float()[:, None])
    packed = torch.from_numpy(np_standardize(unshuffle_patches(patches, 4)))
    with torch.no_grad():
        full = net(x)
        body = net.body(packed)
    assert full.shape == (5, 256)
    torch.testing.assert_close(full, body, atol=1e-4, rtol=1e-4)


def test_torch_and_numpy_standardize_agree() -> None:
    p = np.random.default_rng(1).integers(0, 256, (3, 16, 8, 8)).astype(np.uint8)
    torch.testing.assert_close(standardize(torch.from_numpy(p).float()),
                               torch.from_numpy(np_standardize(p)), atol=1e-5, rtol=1e-5)


def test_gem_with_p_one_is_average_pooling_and_large_p_tends_to_max() -> None:
    x = torch.rand(2, 3, 4, 5) + 0.1
    gem = GeM(p=1.0)
    torch.testing.assert_close(gem(x), x.mean(dim=(2, 3)))
    big = GeM(p=60.0)
    torch.testing.assert_close(big(x), x.amax(dim=(2, 3)), atol=0.05, rtol=0.05)


def test_embedding_is_unit_length() -> None:
    net = EmbeddingNet().eval()
    with torch.no_grad():
        z = net(torch.randn(3, 1, 120, 160))
    assert z.shape == (3, 256)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(3))

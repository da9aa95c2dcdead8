"""Newton–Schulz orthogonalisation and the Muon / AdamW split."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from torch import Tensor  # noqa: E402

from slam.learn.models import DescriptorNet, head_and_stem  # noqa: E402
from slam.learn.muon import CUBIC, Combined, Muon, make_optimizer, newton_schulz  # noqa: E402


def _polar(G: Tensor) -> Tensor:
    U, _, Vh = torch.linalg.svd(G.double(), full_matrices=False)
    return U @ Vh


@pytest.mark.parametrize("shape", [(8, 20), (20, 8), (12, 12)])
def test_cubic_newton_schulz_converges_to_the_polar_factor(shape: tuple[int, int]) -> None:
    torch.manual_seed(0)
    # a well-conditioned matrix: singular values in [0.5, 2]
    U, _ = torch.linalg.qr(torch.randn(shape[0], shape[0]))
    V, _ = torch.linalg.qr(torch.randn(shape[1], shape[1]))
    k = min(shape)
    S = torch.zeros(shape)
    S[range(k), range(k)] = torch.linspace(0.5, 2.0, k)
    G = U @ S @ V.T
    X = newton_schulz(G, steps=60, coefficients=CUBIC)
    assert X.shape == G.shape
    torch.testing.assert_close(X.double(), _polar(G), atol=1e-4, rtol=0)
    # orthogonality of the result: X X^T = I on the smaller side
    small = X @ X.T if shape[0] <= shape[1] else X.T @ X
    torch.testing.assert_close(small, torch.eye(k), atol=1e-4, rtol=0)


def test_quintic_newton_schulz_bounds_the_singular_values() -> None:
    torch.manual_seed(1)
    G = torch.randn(32, 64) @ torch.diag(torch.logspace(-2, 1, 64))
    s = torch.linalg.svdvals(newton_schulz(G))
    assert s.min() > 0.5 and s.max() < 1.25
    with pytest.raises(ValueError):
        newton_schulz(torch.randn(2, 3, 4))


def test_muon_step_moves_along_the_orthogonalised_gradient() -> None:
    torch.manual_seed(2)
    w = torch.nn.Parameter(torch.randn(6, 10))
    w0 = w.detach().clone()
    g = torch.randn(6, 10)
    w.grad = g.clone()
    opt = Muon([w], lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.5)
    opt.step()
    want = w0 * (1 - 0.1 * 0.5) - 0.1 * 0.2 * 10 ** 0.5 * newton_schulz(g)
    torch.testing.assert_close(w.detach(), want)


def test_muon_flattens_convolution_kernels() -> None:
    conv = torch.nn.Conv2d(4, 8, 3, bias=False)
    conv.weight.grad = torch.randn_like(conv.weight)
    before = conv.weight.detach().clone()
    Muon(conv.parameters(), lr=0.01).step()
    step = (before - conv.weight.detach()).reshape(8, -1)
    s = torch.linalg.svdvals(step / (0.01 * 0.2 * 36 ** 0.5))
    assert s.min() > 0.5 and s.max() < 1.25


def test_make_optimizer_puts_vectors_stem_and_head_on_adamw() -> None:
    model = DescriptorNet()
    opt = make_optimizer(model, "muon", 1e-3, 1e-4, head_and_stem(model))
    assert isinstance(opt, Combined)
    muon, adamw = opt.optimizers
    on_muon = {id(p) for g in muon.param_groups for p in g["params"]}
    on_adamw = {id(p) for g in adamw.param_groups for p in g["params"]}
    every = {id(p) for p in model.parameters()}
    assert on_muon | on_adamw == every and not on_muon & on_adamw
    assert head_and_stem(model) <= on_adamw
    assert all(p.ndim >= 2 for p in model.parameters() if id(p) in on_muon)
    plain = make_optimizer(model, "adamw", 1e-3, 1e-4)
    assert isinstance(plain, torch.optim.AdamW)
    with pytest.raises(ValueError):
        make_optimizer(model, "sgd", 1e-3, 0.0)

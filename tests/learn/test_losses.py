"""Straight-through sign, negative mining, triplet and NT-Xent losses."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from slam.learn.losses import (  # noqa: E402
    bit_balance,
    hamming_like,
    mine_negatives,
    negatives_mask,
    nt_xent,
    triplet_loss,
)
from slam.learn.models import ste_sign  # noqa: E402


def test_ste_forward_is_sign_and_backward_is_hardtanh_gradient() -> None:
    x = torch.tensor([-2.0, -0.5, -0.0, 0.0, 0.3, 0.99, 1.5], requires_grad=True)
    y = ste_sign(x)
    assert y.tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    w = torch.arange(7.0)
    (y * w).sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    (F.hardtanh(x2) * w).sum().backward()
    assert torch.equal(x.grad, x2.grad)


def test_ste_gradient_matches_finite_differences_of_the_relaxation() -> None:
    # inside [-1, 1] the STE gradient is that of the identity: compare to central
    # differences of the loss with sign replaced by its relaxation
    torch.manual_seed(0)
    a = (torch.rand(6, 16, dtype=torch.float64) * 1.6 - 0.8).requires_grad_(True)
    b = torch.rand(6, 16, dtype=torch.float64) * 2 - 1
    loss = hamming_like(ste_sign(a), b).sum()
    loss.backward()
    eps = 1e-6
    num = torch.zeros_like(a)
    for idx in np.ndindex(*a.shape):
        plus = a.detach().clone()
        minus = a.detach().clone()
        plus[idx] += eps
        minus[idx] -= eps
        num[idx] = (hamming_like(plus, b).sum() - hamming_like(minus, b).sum()) / (2 * eps)
    torch.testing.assert_close(a.grad, num, atol=1e-6, rtol=1e-6)


def test_hamming_like_counts_differing_bits() -> None:
    a = torch.tensor([[1.0, 1, -1, -1]])
    b = torch.tensor([[1.0, -1, -1, 1], [1.0, 1, -1, -1]])
    assert hamming_like(a, b).tolist() == [[0.5, 0.0]]


# distances anchor i (row) -> positive j (column); the diagonal is each anchor's positive
DIST = torch.tensor([
    [0.30, 0.10, 0.35, 0.60, 0.40],
    [0.20, 0.25, 0.50, 0.26, 0.90],
    [0.05, 0.07, 0.40, 0.06, 0.08],
    [0.70, 0.80, 0.90, 0.10, 0.75],
    [0.45, 0.44, 0.43, 0.42, 0.41],
])


def test_semihard_mining_picks_the_closest_negative_beyond_the_positive() -> None:
    allowed = ~torch.eye(5, dtype=torch.bool)
    allowed[4, 3] = False  # say 3 is the same world point as 4
    got = mine_negatives(DIST, allowed, "semihard").tolist()
    # 0: beyond 0.30 -> 0.35 (col 2); 1: beyond 0.25 -> 0.26 (col 3);
    # 2: none beyond 0.40 -> the farthest of the closer ones, 0.08 (col 4);
    # 3: beyond 0.10 -> 0.70 (col 0); 4: beyond 0.41 -> 0.43 (col 2; col 3 not allowed)
    assert got == [2, 3, 4, 0, 2]


def test_hardest_mining_and_anchors_without_negatives() -> None:
    allowed = ~torch.eye(5, dtype=torch.bool)
    allowed[1] = False
    got = mine_negatives(DIST, allowed, "hardest").tolist()
    assert got == [1, 1, 0, 0, 3]  # anchor 1 has none: its own index
    with pytest.raises(ValueError):
        mine_negatives(DIST, allowed, "random")


def test_negatives_mask_leaves_out_the_same_point() -> None:
    xyz = torch.tensor([[0.0, 0, 1], [0.01, 0, 1], [1.0, 0, 1], [np.nan, np.nan, np.nan]])
    key = torch.tensor([1, 2, 3, 3])
    m = negatives_mask(xyz, key, 0.05)
    assert m.tolist() == [[False, False, True, True], [False, False, True, True],
                          [True, True, False, False], [True, True, False, False]]


def test_triplet_loss_value() -> None:
    a = torch.tensor([[1.0, 1, 1, 1], [-1.0, -1, -1, -1]])
    b = torch.tensor([[1.0, 1, 1, -1], [-1.0, -1, 1, 1]])
    allowed = ~torch.eye(2, dtype=torch.bool)
    loss, stats = triplet_loss(a, b, allowed, margin=0.5, mode="hardest")
    # d(a0,b0)=.25 d(a0,b1)=.75 d(a1,b1)=.5 d(a1,b0)=.75 ; d(b-side) same matrix transposed
    # anchor side: relu(.25-.75+.5)=0, relu(.5-.75+.5)=.25 ; positive side: relu(.25-.75+.5)=0,
    # relu(.5-.75+.5)=.25 -> mean over 2 anchors of the sum, halved
    assert loss.item() == pytest.approx(0.25)
    assert stats["d_pos"] == pytest.approx(0.375)


def test_bit_balance() -> None:
    assert bit_balance(torch.tensor([[1.0, 1], [-1.0, 1]])).item() == pytest.approx(0.5)


def test_nt_xent_equals_simclr_cross_entropy() -> None:
    torch.manual_seed(1)
    n = 6
    z = F.normalize(torch.randn(2 * n, 8), dim=1)
    idx = torch.arange(2 * n)
    partner = (idx + n) % (2 * n)
    positives = torch.zeros(2 * n, 2 * n, dtype=torch.bool)
    positives[idx, partner] = True
    t = 0.2
    logits = z @ z.T / t
    logits.fill_diagonal_(float("-inf"))
    want = F.cross_entropy(logits, partner)
    assert nt_xent(z, positives, t).item() == pytest.approx(want.item(), rel=1e-6)


def test_nt_xent_ignores_near_misses_and_averages_positives() -> None:
    z = F.normalize(torch.tensor([[1.0, 0], [1.0, 0.1], [0.0, 1], [1.0, 0.05]]), dim=1)
    pos = torch.zeros(4, 4, dtype=torch.bool)
    pos[0, 1] = pos[1, 0] = True
    ignore = torch.zeros(4, 4, dtype=torch.bool)
    ignore[0, 3] = ignore[3, 0] = True
    loss = nt_xent(z, pos, 1.0, ignore)
    s = z @ z.T
    l0 = -(s[0, 1] - torch.logsumexp(s[0, [1, 2]], 0))
    l1 = -(s[1, 0] - torch.logsumexp(s[1, [0, 2, 3]], 0))
    assert loss.item() == pytest.approx(((l0 + l1) / 2).item(), rel=1e-6)

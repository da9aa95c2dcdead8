"""Losses: triplet margin loss with in-batch negative mining for the binary descriptor,
NT-Xent (normalised temperature-scaled cross entropy) for the place embedding."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

MINING = ("semihard", "hardest")


def hamming_like(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise distances (N, M) in [0, 1] of +-1 codes a (N, D) and b (M, D): the share of
    differing bits, ``(1 - a.b / D) / 2`` (differentiable when the codes are relaxed)."""
    return (1.0 - a @ b.T / a.shape[1]) / 2.0


def negatives_mask(xyz_world: Tensor, key: Tensor, min_dist_m: float = 0.05) -> Tensor:
    """Mask (N, N) of pairs (i, j) that may serve as negatives: not the same keypoint
    (``key`` (N,)) and, where both world points (N, 3) are known, ``min_dist_m`` apart."""
    d = torch.cdist(xyz_world, xyz_world)
    near = d < min_dist_m  # NaN compares False: unknown points are never "near"
    same = key[:, None] == key[None, :]
    return ~(near | same)


def mine_negatives(dist: Tensor, allowed: Tensor, mode: str = "semihard") -> Tensor:
    """Negative index (N,) per anchor from distances ``dist`` (N, N) anchor i to positive
    j (the diagonal holds each anchor's own positive) and ``allowed`` (N, N) negatives.

    ``semihard`` (FaceNet): the closest negative farther than the anchor's positive;
    when there is none, the farthest allowed one (the easiest of those that are closer).
    ``hardest``: the closest allowed negative. Anchors without any allowed negative get
    their own index (the caller drops them).
    """
    if mode not in MINING:
        raise ValueError(f"unknown mining {mode!r}; use one of {MINING}")
    n = dist.shape[0]
    big = torch.finfo(dist.dtype).max
    pos = dist.diagonal()[:, None]
    if mode == "hardest":
        masked = torch.where(allowed, dist, torch.full_like(dist, big))
        idx = masked.argmin(dim=1)
    else:
        farther = allowed & (dist > pos)
        masked = torch.where(farther, dist, torch.full_like(dist, big))
        semi = masked.argmin(dim=1)
        easiest = torch.where(allowed, dist, torch.full_like(dist, -big)).argmax(dim=1)
        idx = torch.where(farther.any(dim=1), semi, easiest)
    none = ~allowed.any(dim=1)
    return torch.where(none, torch.arange(n, device=dist.device), idx)


def triplet_loss(codes_a: Tensor, codes_b: Tensor, allowed: Tensor, margin: float = 0.2,
                 mode: str = "semihard") -> tuple[Tensor, dict[str, float]]:
    """Triplet margin loss of anchors ``codes_a`` (N, D) and positives ``codes_b`` (N, D)
    (row i matches row i), negatives mined among the other positives (and, symmetric,
    anchors). Distances by :func:`hamming_like` (fractions of the bits), ``margin`` too.
    Returns the loss and statistics (mean positive/negative distance, active share)."""
    dist = hamming_like(codes_a, codes_b)
    with torch.no_grad():
        neg_ab = mine_negatives(dist.detach(), allowed, mode)
        neg_ba = mine_negatives(dist.detach().T, allowed.T, mode)
    n = dist.shape[0]
    rows = torch.arange(n, device=dist.device)
    pos = dist.diagonal()
    d_ab = dist[rows, neg_ab]
    d_ba = dist[neg_ba, rows]
    valid = allowed.any(dim=1).to(dist.dtype)
    losses = F.relu(pos - d_ab + margin) + F.relu(pos - d_ba + margin)
    loss = (losses * valid).sum() / valid.sum().clamp_min(1.0) / 2.0
    with torch.no_grad():
        stats = {"d_pos": float(pos.mean()), "d_neg": float(d_ab.mean()),
                 "active": float((losses > 0).float().mean())}
    return loss, stats


def bit_balance(codes: Tensor) -> Tensor:
    """Mean over bits of the squared batch mean of +-1 codes (N, D): zero when every bit is
    set in half of the batch, one when a bit never changes (wasted capacity)."""
    return codes.mean(dim=0).pow(2).mean()


def nt_xent(z: Tensor, positives: Tensor, temperature: float = 0.1,
            ignore: Tensor | None = None) -> Tensor:
    """NT-Xent of unit embeddings ``z`` (N, D) with several positives per row.

    ``positives`` (N, N) bool marks pairs of the same place (the diagonal is ignored);
    ``ignore`` (N, N) pairs neither positive nor negative (near misses). For each anchor
    the loss is ``-mean_p log(exp(s_ip / t) / sum_{k != i, not ignored} exp(s_ik / t))``,
    averaged over anchors with at least one positive (SimCLR's loss when every row has
    exactly its other view as positive).
    """
    n = z.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    pos = positives & ~eye
    drop = eye if ignore is None else eye | (ignore & ~pos)
    logits = (z @ z.T) / temperature
    logits = logits.masked_fill(drop, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    n_pos = pos.sum(dim=1)
    per_row = -(log_prob.masked_fill(~pos, 0.0)).sum(dim=1) / n_pos.clamp_min(1)
    has = n_pos > 0
    return per_row[has].mean() if has.any() else z.sum() * 0.0

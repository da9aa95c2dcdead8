"""The two training tasks (PyTorch): batches, augmentation, loss and validation metric.

* :class:`DescriptorTask`: triplet loss on straight-through binary codes of matching
  patches, negatives mined in the batch (never the same world point). Validation: mean
  mutual-nearest-neighbour precision of the binary codes within each held-out frame pair.
* :class:`EmbeddingTask`: NT-Xent over two augmented views of frames and their
  ground-truth neighbours (within 0.3 m and 20 degrees); validation: place recall of the
  validation span with :func:`slam.learn.evaluate.place_recall`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from numpy.typing import NDArray
from torch import Tensor

from slam.learn.data import TRAIN, VAL
from slam.learn.datasets import FrameSet, PatchPairs
from slam.learn.evaluate import (
    TRUE_ANGLE_DEG,
    TRUE_DIST_M,
    angle_deg,
    embedding_ranker,
    place_recall,
)
from slam.learn.losses import bit_balance, negatives_mask, nt_xent, triplet_loss
from slam.learn.models import DescriptorNet, EmbeddingNet, head_and_stem, standardize, ste_sign


def _torch_rng(rng: np.random.Generator) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng.integers(2**31)))


def photometric(x: Tensor, g: torch.Generator, noise: float = 6.0) -> Tensor:
    """Random gamma (0.7..1.4), gain (0.8..1.2) and Gaussian noise (sigma up to ``noise``
    grey levels) per sample of grey images ``x`` (N, 1, H, W) in [0, 255]."""
    n = x.shape[0]
    shape = (n, 1, 1, 1)
    gamma = torch.empty(shape).uniform_(0.7, 1.4, generator=g).to(x.device)
    gain = torch.empty(shape).uniform_(0.8, 1.2, generator=g).to(x.device)
    sigma = torch.empty(shape).uniform_(0.0, noise, generator=g).to(x.device)
    eps = torch.randn(x.shape, generator=g).to(x.device)
    y = 255.0 * (x / 255.0).clamp(0, 1).pow(gamma) * gain + sigma * eps
    return y.clamp(0, 255)


class DescriptorTask:
    """Binary descriptor from :class:`PatchPairs` (train and val splits)."""

    def __init__(self, pairs: PatchPairs, model: DescriptorNet, margin: float = 0.2,
                 mining: str = "semihard", balance: float = 0.1, per_group: int = 32,
                 near: float = 1.0) -> None:
        self.model = model
        self.near = near
        self.per_group = per_group
        self.margin = margin
        self.mining = mining
        self.balance = balance
        train = pairs.subset(pairs.split == TRAIN)
        self.val = pairs.subset(pairs.split == VAL)
        if len(train) == 0 or len(self.val) == 0:
            raise ValueError("the data have no training or no validation pairs")
        self.pa = torch.from_numpy(train.patches_a)
        self.pb = torch.from_numpy(train.patches_b)
        self.pn = torch.from_numpy(train.patches_near)
        self.has_near = torch.from_numpy(train.has_near)
        self.xyz = torch.from_numpy(train.xyz_world)
        self.key = torch.from_numpy(train.key)
        order = np.argsort(train.group, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(train.group[order]) != 0])
        self.groups = np.split(order, starts[1:])
        self.device = torch.device("cpu")
        group = torch.from_numpy(self.val.group)
        self.orb_val = mnn_precision(_bits(self.val.orb_a), _bits(self.val.orb_b), group)

    def to(self, device: torch.device) -> None:
        self.device = device
        self.model.to(device)

    def keep_on_adamw(self) -> set[int]:
        return head_and_stem(self.model)

    def batches(self, rng: np.random.Generator, n: int, batch_size: int
                ) -> Iterator[NDArray[np.int64]]:
        """Pair indices: ``per_group`` pairs from each of batch_size / per_group frame pairs,
        so that the negatives include other keypoints of the same images."""
        n_groups = max(1, batch_size // self.per_group)
        for _ in range(n):
            chosen = rng.choice(len(self.groups), min(n_groups, len(self.groups)), replace=False)
            parts = [rng.choice(self.groups[g], min(self.per_group, len(self.groups[g])),
                                replace=False) for g in chosen]
            yield np.concatenate(parts)

    def _codes(self, patches: Tensor) -> Tensor:
        return self.model(standardize(patches.float()[:, None].to(self.device)))

    def loss(self, batch: NDArray[np.int64], rng: np.random.Generator
             ) -> tuple[Tensor, dict[str, float]]:
        idx = torch.from_numpy(batch)
        g = _torch_rng(rng)
        a = photometric(self.pa[idx].float()[:, None], g)
        b = photometric(self.pb[idx].float()[:, None], g)
        ya = self.model(standardize(a.to(self.device)))
        yb = self.model(standardize(b.to(self.device)))
        allowed = negatives_mask(self.xyz[idx], self.key[idx]).to(self.device)
        ca, cb = ste_sign(ya), ste_sign(yb)
        loss, stats = triplet_loss(ca, cb, allowed, self.margin, self.mining)
        if self.near > 0:
            near = self.has_near[idx].to(self.device)
            n = photometric(self.pn[idx].float()[:, None], g)
            cn = ste_sign(self.model(standardize(n.to(self.device))))
            d_ap = (1.0 - (ca * cb).mean(dim=1)) / 2.0
            d_an = (1.0 - (ca * cn).mean(dim=1)) / 2.0
            near_loss = (F.relu(d_ap - d_an + self.margin) * near).sum() / near.sum().clamp_min(1)
            loss = loss + self.near * near_loss
            stats["near"] = near_loss.item()
        if self.balance > 0:
            imbalance = bit_balance(torch.cat([ca, cb]))
            loss = loss + self.balance * imbalance
            stats["imbalance"] = imbalance.item()
        return loss, stats

    def validate(self) -> dict[str, float]:
        """``metric``: mean over val frame pairs of the mutual-NN precision of the codes."""
        bits_a = torch.cat([self._codes(self.val_a[i:i + 4096]) > 0
                            for i in range(0, len(self.val_a), 4096)])
        bits_b = torch.cat([self._codes(self.val_b[i:i + 4096]) > 0
                            for i in range(0, len(self.val_b), 4096)])
        out = mnn_precision(bits_a, bits_b, torch.from_numpy(self.val.group))
        out.update({f"orb_{k}": v for k, v in self.orb_val.items()})
        return out

    @property
    def val_a(self) -> Tensor:
        return torch.from_numpy(self.val.patches_a)

    @property
    def val_b(self) -> Tensor:
        return torch.from_numpy(self.val.patches_b)


def _bits(desc: NDArray[np.uint8]) -> Tensor:
    """(M, 32) packed descriptors -> (M, 256) bool bits."""
    return torch.from_numpy(np.unpackbits(desc, axis=1, bitorder="little").astype(bool))


def mnn_precision(bits_a: Tensor, bits_b: Tensor, group: Tensor) -> dict[str, float]:
    """Mutual-NN precision of boolean codes (M, D) of matching rows, within each group;
    also the mean Hamming distance (bits) of true pairs and of all other pairs."""
    precisions, d_pos, d_neg = [], [], []
    for gid in torch.unique(group):
        sel = torch.nonzero(group == gid).flatten()
        a = bits_a[sel].float()
        b = bits_b[sel].float()
        d = a @ (1 - b).T + (1 - a) @ b.T  # Hamming distances
        nn_ab = d.argmin(dim=1)
        nn_ba = d.argmin(dim=0)
        mutual = nn_ba[nn_ab] == torch.arange(len(sel))
        correct = mutual & (nn_ab == torch.arange(len(sel)))
        precisions.append(float(correct.sum()) / max(int(mutual.sum()), 1))
        d_pos.append(float(d.diagonal().mean()))
        off = ~torch.eye(len(sel), dtype=torch.bool)
        d_neg.append(float(d[off].mean()))
    return {"metric": float(np.mean(precisions)), "hamming_pos": float(np.mean(d_pos)),
            "hamming_neg": float(np.mean(d_neg))}


def place_relations(T_world_cam: NDArray[np.float64], seq: NDArray[np.int16],
                    dist_m: float = TRUE_DIST_M, angle: float = TRUE_ANGLE_DEG
                    ) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """(positives, near misses) (F, F): same place (within ``dist_m`` and ``angle``
    degrees, same sequence, or the same frame) and pairs within twice that but not
    positive (left out of NT-Xent's denominator). Frames without a pose are only their
    own positives."""
    n = len(seq)
    known = np.isfinite(T_world_cam).all(axis=(1, 2))
    pos = np.eye(n, dtype=bool)
    near = np.zeros((n, n), bool)
    pts = np.nan_to_num(T_world_cam[:, :3, 3])
    for i in np.flatnonzero(known):
        same = known & (seq == seq[i])
        d = np.linalg.norm(pts - pts[i], axis=1)
        a = angle_deg(np.nan_to_num(T_world_cam[i, :3, :3]), np.nan_to_num(T_world_cam[:, :3, :3]))
        pos[i] |= same & (d < dist_m) & (a < angle)
        near[i] = same & (d < 2 * dist_m) & (a < 2 * angle) & ~pos[i]
    return pos, near


def augment_views(images: Tensor, g: torch.Generator) -> Tensor:
    """Random rotation (+-8 deg), scale (0.85..1.1), shift (+-8 %) and photometric change of
    grey images (N, 1, H, W) in [0, 255]."""
    n = images.shape[0]
    ang = torch.empty(n).uniform_(-8.0, 8.0, generator=g) * torch.pi / 180.0
    s = torch.empty(n).uniform_(0.85, 1.1, generator=g)
    t = torch.empty(n, 2).uniform_(-0.08, 0.08, generator=g)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = torch.cos(ang) / s
    theta[:, 0, 1] = -torch.sin(ang) / s
    theta[:, 1, 0] = torch.sin(ang) / s
    theta[:, 1, 1] = torch.cos(ang) / s
    theta[:, :, 2] = t
    grid = F.affine_grid(theta.to(images.device), list(images.shape), align_corners=False)
    warped = F.grid_sample(images, grid, padding_mode="reflection", align_corners=False)
    return photometric(warped, g, noise=4.0)


class EmbeddingTask:
    """Place embedding from a :class:`FrameSet` (train frames to learn, val to score)."""

    def __init__(self, frames: FrameSet, model: EmbeddingNet, temperature: float = 0.1
                 ) -> None:
        self.model = model
        self.temperature = temperature
        self.frames = frames
        self.train = np.flatnonzero(frames.split == TRAIN)
        if len(self.train) < 2 or not np.any(frames.split == VAL):
            raise ValueError("the data have too few training or no validation frames")
        pos, near = place_relations(frames.T_world_cam[self.train], frames.seq[self.train])
        self.pos, self.near = torch.from_numpy(pos), torch.from_numpy(near)
        self.images = torch.from_numpy(frames.images)
        self.device = torch.device("cpu")

    def to(self, device: torch.device) -> None:
        self.device = device
        self.model.to(device)

    def keep_on_adamw(self) -> set[int]:
        return head_and_stem(self.model)

    def batches(self, rng: np.random.Generator, n: int, batch_size: int
                ) -> Iterator[tuple[NDArray[np.int64], NDArray[np.int64]]]:
        """(anchors, partners): positions into the training frames; each partner is a
        random ground-truth neighbour of its anchor (possibly the anchor itself)."""
        for _ in range(n):
            anchors = rng.choice(len(self.train), min(batch_size, len(self.train)),
                                 replace=False)
            partners = np.array([rng.choice(np.flatnonzero(self.pos[i].numpy()))
                                 for i in anchors], np.int64)
            yield anchors, partners

    def _embed(self, images: Tensor) -> Tensor:
        return self.model(standardize(images.to(self.device)))

    def loss(self, batch: tuple[NDArray[np.int64], NDArray[np.int64]],
             rng: np.random.Generator) -> tuple[Tensor, dict[str, float]]:
        anchors, partners = batch
        ids = torch.from_numpy(np.concatenate([anchors, partners]))
        g = _torch_rng(rng)
        imgs = self.images[torch.from_numpy(self.train)[ids]].float()[:, None]
        z = self._embed(augment_views(imgs, g))
        positives = self.pos[ids][:, ids].to(self.device)
        ignore = self.near[ids][:, ids].to(self.device)
        loss = nt_xent(z, positives, self.temperature, ignore)
        return loss, {"positives": float(positives.float().sum(dim=1).mean())}

    def embed_all(self) -> NDArray[np.float32]:
        """Embeddings (F, D) of every frame, no augmentation."""
        out = [self._embed(self.images[i:i + 128].float()[:, None]).cpu()
               for i in range(0, len(self.images), 128)]
        return torch.cat(out).numpy().astype(np.float32)

    def validate(self) -> dict[str, float]:
        """``metric``: mean of recall@1 and @5 of the val span's queries (database: every
        10th frame of train and val)."""
        emb = self.embed_all()
        fs = self.frames
        hits1 = hits5 = counted = 0.0
        for s in np.unique(fs.seq):
            rows = np.flatnonzero((fs.seq == s) & np.isfinite(fs.T_world_cam).all(axis=(1, 2)))
            if len(rows) == 0 or not np.any(fs.split[rows] == VAL):
                continue
            index = np.arange(len(rows), dtype=np.int64)
            db = np.flatnonzero(index % 10 == 0)
            r = place_recall(index, fs.stamps[rows], fs.T_world_cam[rows],
                             embedding_ranker(emb[rows], db), fs.split[rows] == VAL)
            n = r["queries_counted"]
            hits1 += r["recall_at_1"] * n
            hits5 += r["recall_at_5"] * n
            counted += n
        r1, r5 = hits1 / max(counted, 1), hits5 / max(counted, 1)
        return {"metric": (r1 + r5) / 2, "recall_at_1": r1, "recall_at_5": r5,
                "queries": counted}

"""The training loop: schedule, early stopping, checkpoints, reproducibility; the tasks on
small synthetic data."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import Tensor  # noqa: E402

from slam.learn.data import TRAIN, VAL  # noqa: E402
from slam.learn.datasets import FrameSet, PatchPairs  # noqa: E402
from slam.learn.models import DescriptorNet, EmbeddingNet  # noqa: E402
from slam.learn.tasks import DescriptorTask, EmbeddingTask, place_relations  # noqa: E402
from slam.learn.train import Schedule, TrainConfig, fit  # noqa: E402


class ScriptedTask:
    """A linear model whose validation metric follows a script."""

    def __init__(self, metrics: list[float]) -> None:
        self.model = torch.nn.Linear(3, 1)
        self.metrics = list(metrics)
        self.weights_at: list[Tensor] = []

    def to(self, device: object) -> None:
        self.model.to(device)

    def keep_on_adamw(self) -> set[int]:
        return set()

    def batches(self, rng: np.random.Generator, n: int, batch_size: int) -> Iterator[int]:
        yield from range(n)

    def loss(self, batch: int, rng: np.random.Generator) -> tuple[Tensor, dict[str, float]]:
        x = torch.ones(4, 3)
        return (self.model(x) - 1).pow(2).mean(), {}

    def validate(self) -> dict[str, float]:
        self.weights_at.append(self.model.weight.detach().clone())
        return {"metric": self.metrics.pop(0)}


def test_early_stopping_keeps_the_best_epoch(tmp_path: Path) -> None:
    task = ScriptedTask([0.1, 0.5, 0.4, 0.3, 0.2, 0.9])
    cfg = TrainConfig(epochs=6, steps_per_epoch=2, patience=2, optimizer="adamw", lr=0.1,
                      warmup_steps=0)
    summary = fit(task, cfg, tmp_path, progress=False)
    assert summary["best_epoch"] == 2 and summary["epochs_run"] == 4
    torch.testing.assert_close(task.model.weight.detach(), task.weights_at[1])
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    assert (tmp_path / "best.pt").is_file() and (tmp_path / "last.pt").is_file()
    assert torch.load(tmp_path / "best.pt", weights_only=False)["epoch"] == 2


def test_warmup_then_cosine_and_plateau() -> None:
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = Schedule(opt, TrainConfig(warmup_steps=10), total_steps=110)
    lrs = []
    for _ in range(110):
        lrs.append(sched.lr)
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert sched.lr == pytest.approx(0.01)
    opt2 = torch.optim.SGD(model.parameters(), lr=1.0)
    plateau = Schedule(opt2, TrainConfig(warmup_steps=0, schedule="plateau",
                                         plateau_patience=2), total_steps=10)
    for metric in (0.5, 0.4, 0.4):
        plateau.epoch_end(metric)
    assert plateau.lr == pytest.approx(0.5)


def _synthetic_pairs(n_groups: int = 6, per_group: int = 24, seed: int = 0) -> PatchPairs:
    """Random blob patches; B = A with noise and a brightness change."""
    rng = np.random.default_rng(seed)
    n = n_groups * per_group
    base = rng.uniform(0, 255, (n, 8, 8))
    a = np.kron(base, np.ones((4, 4)))
    b = np.clip(a * 0.9 + 10 + rng.normal(0, 8, a.shape), 0, 255)
    group = np.repeat(np.arange(n_groups), per_group).astype(np.int32)
    split = np.where(group < n_groups - 2, TRAIN, VAL).astype(np.int8)
    xyz = np.stack([np.arange(n), np.zeros(n), np.ones(n)], 1).astype(np.float32)
    orb = rng.integers(0, 256, (n, 32)).astype(np.uint8)
    near = np.roll(a, 1, axis=0).astype(np.uint8)
    return PatchPairs(a.astype(np.uint8), b.astype(np.uint8), xyz, np.arange(n, dtype=np.int64),
                      group, split, orb, orb, near, np.ones(n, bool))


def _train_descriptor(tmp_path: Path, seed: int) -> tuple[dict, DescriptorNet]:
    torch.manual_seed(seed)
    task = DescriptorTask(_synthetic_pairs(), DescriptorNet(), per_group=12)
    cfg = TrainConfig(epochs=2, steps_per_epoch=4, batch_size=48, warmup_steps=2, seed=seed)
    return fit(task, cfg, tmp_path, progress=False), task.model


def test_descriptor_training_is_reproducible_and_learns(tmp_path: Path) -> None:
    s1, m1 = _train_descriptor(tmp_path / "a", 3)
    _, m2 = _train_descriptor(tmp_path / "b", 3)
    for p1, p2 in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(p1, p2)
    records = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["train_loss"] < records[0]["train_loss"] * 1.5
    assert s1["best"]["val_metric"] > 0.5  # easy pairs: most mutual matches right


def test_place_relations_by_distance_and_angle() -> None:
    T = np.tile(np.eye(4), (4, 1, 1))
    T[1, 0, 3] = 0.2  # 0.2 m away: positive
    T[2, 0, 3] = 0.5  # 0.5 m: near miss
    T[3] = np.nan  # no pose: only itself
    pos, near = place_relations(T, np.zeros(4, np.int16))
    assert pos[0].tolist() == [True, True, False, False]
    assert near[0].tolist() == [False, False, True, False]
    assert pos[3].tolist() == [False, False, False, True]


def test_embedding_task_runs_a_step_and_validates() -> None:
    rng = np.random.default_rng(0)
    n = 40
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, 0, 3] = np.arange(n) * 0.05
    frames = FrameSet(rng.integers(0, 256, (n, 120, 160)).astype(np.uint8), T,
                      np.arange(n) / 10.0, np.zeros(n, np.int16),
                      np.where(np.arange(n) < 30, TRAIN, VAL).astype(np.int8))
    task = EmbeddingTask(frames, EmbeddingNet())
    batch = next(task.batches(rng, 1, 8))
    anchors, partners = batch
    assert all(task.pos[a, p] for a, p in zip(anchors, partners))
    loss, _ = task.loss(batch, rng)
    assert math.isfinite(loss.item()) and loss.item() > 0
    task.model.eval()
    with torch.no_grad():
        val = task.validate()
    assert 0.0 <= val["recall_at_1"] <= 1.0

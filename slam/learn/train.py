"""The training loop shared by both tasks (PyTorch).

Seeded and reproducible (one generator for the data order and augmentation, torch's
deterministic algorithms), warm-up then cosine decay or reduce-on-plateau, decoupled
weight decay, gradient-norm clipping, early stopping on the validation metric, a
progress bar, a metrics log (one JSON object per epoch) and checkpoints
(``last.pt``, ``best.pt``). Runs on the GPU when there is one.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from slam.learn.muon import Optimizer, make_optimizer

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Hyper-parameters of one run (stored in the checkpoints and the metrics log)."""

    epochs: int = 30
    steps_per_epoch: int = 100
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    optimizer: Literal["adamw", "muon"] = "muon"
    schedule: Literal["cosine", "plateau"] = "cosine"
    warmup_steps: int = 100
    plateau_factor: float = 0.5
    plateau_patience: int = 2
    clip_grad_norm: float = 1.0
    patience: int = 6
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Task(Protocol):
    """What :func:`fit` trains: a model, batches, a loss and a validation metric
    (``metric``, higher is better)."""

    @property
    def model(self) -> nn.Module: ...

    def batches(self, rng: np.random.Generator, n: int, batch_size: int
                ) -> Iterator[Any]: ...

    def loss(self, batch: Any, rng: np.random.Generator) -> tuple[Tensor, dict[str, float]]: ...

    def validate(self) -> dict[str, float]: ...

    def to(self, device: torch.device) -> None: ...

    def keep_on_adamw(self) -> set[int]: ...


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, numpy and torch; deterministic algorithms; the run's generator."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return np.random.default_rng(seed)


def pick_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else the CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Schedule:
    """Learning-rate factor: linear warm-up over ``warmup_steps``, then cosine down to
    1 % at ``total_steps``, or (plateau) constant, halved (``plateau_factor``) after
    ``plateau_patience`` epochs without a better validation metric."""

    def __init__(self, optimizer: Optimizer, cfg: TrainConfig, total_steps: int) -> None:
        self.optimizer = optimizer
        self.cfg = cfg
        self.total = max(total_steps, 1)
        self.base = [g["lr"] for g in optimizer.param_groups]
        self.plateau_scale = 1.0
        self.best = -math.inf
        self.bad_epochs = 0
        self.step_count = 0
        self._apply()

    def factor(self) -> float:
        s, w = self.step_count, self.cfg.warmup_steps
        warm = min(1.0, (s + 1) / w) if w > 0 else 1.0
        if self.cfg.schedule == "plateau":
            return warm * self.plateau_scale
        progress = min(1.0, max(0, s - w) / max(1, self.total - w))
        return warm * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress)))

    def _apply(self) -> None:
        f = self.factor()
        for g, base in zip(self.optimizer.param_groups, self.base):
            g["lr"] = base * f

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def epoch_end(self, metric: float) -> None:
        if self.cfg.schedule != "plateau":
            return
        if metric > self.best:
            self.best, self.bad_epochs = metric, 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs >= self.cfg.plateau_patience:
                self.plateau_scale *= self.cfg.plateau_factor
                self.bad_epochs = 0
                log.info("validation metric flat: learning rate x%.2f", self.plateau_scale)
        self._apply()

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])


def _checkpoint(path: Path, task: Task, optimizer: Optimizer, cfg: TrainConfig, epoch: int,
                metrics: dict[str, float]) -> None:
    state = {"model": task.model.state_dict(), "optimizer": optimizer.state_dict(),
             "config": asdict(cfg), "epoch": epoch, "metrics": metrics,
             "model_config": getattr(task.model, "config", {})}
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _train_epoch(task: Task, optimizer: Optimizer, schedule: Schedule, cfg: TrainConfig,
                 rng: np.random.Generator, bar: Any) -> dict[str, float]:
    task.model.train()
    sums: dict[str, float] = {}
    n = 0
    for batch in task.batches(rng, cfg.steps_per_epoch, cfg.batch_size):
        loss, stats = task.loss(batch, rng)
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        norm = nn.utils.clip_grad_norm_(task.model.parameters(), cfg.clip_grad_norm)
        optimizer.step()
        schedule.step()
        for k, v in {"loss": loss.item(), "grad_norm": norm.item(), **stats}.items():
            sums[k] = sums.get(k, 0.0) + v
        n += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{schedule.lr:.2e}", refresh=False)
    return {f"train_{k}": v / max(n, 1) for k, v in sums.items()}


def fit(task: Task, cfg: TrainConfig, out_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Train ``task`` for up to ``cfg.epochs`` epochs, stop early when the validation
    metric has not improved for ``cfg.patience`` epochs, and load the best weights back.

    Writes ``metrics.jsonl``, ``last.pt`` and ``best.pt`` in ``out_dir``; returns the
    summary (best epoch and its metrics, time, epochs run).
    """
    from tqdm import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rng = seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    task.to(device)
    optimizer = make_optimizer(task.model, cfg.optimizer, cfg.lr, cfg.weight_decay,
                               task.keep_on_adamw())
    schedule = Schedule(optimizer, cfg, cfg.epochs * cfg.steps_per_epoch)
    log_path = out_dir / "metrics.jsonl"
    log_path.write_text("")
    best: dict[str, Any] = {"metric": -math.inf, "epoch": -1}
    t0 = time.perf_counter()
    bar = tqdm(total=cfg.epochs * cfg.steps_per_epoch, disable=not progress, unit="step",
               leave=False)
    epoch = 0
    for epoch in range(1, cfg.epochs + 1):
        metrics = _train_epoch(task, optimizer, schedule, cfg, rng, bar)
        task.model.eval()
        with torch.no_grad():
            metrics.update({f"val_{k}": v for k, v in task.validate().items()})
        metrics.update(epoch=epoch, lr=schedule.lr, seconds=time.perf_counter() - t0)
        schedule.epoch_end(metrics["val_metric"])
        with log_path.open("a") as f:
            f.write(json.dumps(metrics) + "\n")
        _checkpoint(out_dir / "last.pt", task, optimizer, cfg, epoch, metrics)
        if metrics["val_metric"] > best["metric"]:
            best = {"metric": metrics["val_metric"], "epoch": epoch, "metrics": metrics}
            _checkpoint(out_dir / "best.pt", task, optimizer, cfg, epoch, metrics)
        log.info("epoch %d: loss %.4f, val %.4f (best %.4f at %d)", epoch,
                 metrics["train_loss"], metrics["val_metric"], best["metric"], best["epoch"])
        if epoch - best["epoch"] >= cfg.patience:
            log.info("early stop: no better validation metric for %d epochs", cfg.patience)
            break
    bar.close()
    state = torch.load(out_dir / "best.pt", map_location=device, weights_only=False)
    task.model.load_state_dict(state["model"])
    task.model.eval()
    return {"best_epoch": best["epoch"], "best": best.get("metrics", {}),
            "epochs_run": epoch, "seconds": time.perf_counter() - t0,
            "device": str(device), "config": asdict(cfg)}

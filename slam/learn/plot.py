"""Training curves: loss and validation metric per epoch, from ``metrics.jsonl`` logs."""

from __future__ import annotations

import json
from pathlib import Path


def read_log(path: Path) -> list[dict[str, float]]:
    """Per-epoch records of a ``metrics.jsonl`` file."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curves(logs: dict[str, Path], out: Path) -> None:
    """One row per run (``name -> metrics.jsonl``): training loss and validation metric
    against the epoch; written as PNG to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(logs), 2, figsize=(9, 3.2 * len(logs)), squeeze=False)
    for row, (name, path) in enumerate(logs.items()):
        records = read_log(path)
        epochs = [r["epoch"] for r in records]
        ax_loss, ax_val = axes[row]
        ax_loss.plot(epochs, [r["train_loss"] for r in records], marker=".")
        ax_loss.set_title(f"{name}: training loss")
        ax_loss.set_xlabel("epoch")
        ax_loss.grid(alpha=0.3)
        val_keys = [k for k in ("val_metric", "val_recall_at_1", "val_recall_at_5")
                    if k in records[0]]
        for k in val_keys:
            ax_val.plot(epochs, [r[k] for r in records], marker=".", label=k[4:])
        if "val_orb_metric" in records[0]:  # the same metric of ORB's descriptor
            ax_val.plot(epochs, [r["val_orb_metric"] for r in records], "--", label="ORB")
        ax_val.set_title(f"{name}: validation")
        ax_val.set_xlabel("epoch")
        ax_val.grid(alpha=0.3)
        ax_val.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)

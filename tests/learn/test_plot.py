"""Training-curve plot from metrics logs."""

from __future__ import annotations

import json
from pathlib import Path

from slam.learn.plot import plot_curves, read_log


def test_plot_curves_writes_a_png(tmp_path: Path) -> None:
    log = tmp_path / "m.jsonl"
    rows = [{"epoch": e, "train_loss": 1.0 / e, "val_metric": 0.5 + 0.1 * e,
             "val_orb_metric": 0.55} for e in (1, 2, 3)]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert read_log(log) == rows
    out = tmp_path / "c.png"
    plot_curves({"descriptor": log, "embedding": log}, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000

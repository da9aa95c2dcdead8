"""``slam train``: end to end on a short synthetic sequence (depth + ground truth)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from slam.cli.main import main

pytest.importorskip("torch")
pytest.importorskip("onnx")

DATA = "synthetic:forward?n_frames=24"


def _train(task: str, out: Path, cache: Path, *extra: str) -> int:
    return main(["train", task, "--data", DATA, "--out", str(out), "--cache", str(cache),
                 "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "32",
                 "--warmup", "1", "--split", "0.6", "0.2", "--no-progress", *extra])


def test_train_descriptor_writes_a_model_cv2_runs(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from slam.features.learned import LearnedDescriptor

    assert _train("descriptor", tmp_path / "run", tmp_path / "cache",
                  "--export", str(tmp_path / "d.onnx"), "--optimizer", "adamw") == 0
    assert "descriptor: best epoch 1 of 1" in capsys.readouterr().out
    for name in ("model.onnx", "model.json", "best.pt", "last.pt", "metrics.jsonl",
                 "curves.png", "summary.json"):
        assert (tmp_path / "run" / name).is_file(), name
    meta = json.loads((tmp_path / "d.json").read_text())
    assert meta["data"] == [DATA] and meta["train_pairs"] > 0 and meta["val_pairs"] > 0
    assert list((tmp_path / "cache").glob("synthetic-*.npz"))
    img = (np.random.default_rng(0).uniform(0, 255, (64, 64))).astype(np.uint8)
    desc = LearnedDescriptor(tmp_path / "d.onnx").compute(
        img, np.array([[32.0, 32.0]]), np.array([0], np.int32), np.array([0.0], np.float32))
    assert desc.shape == (1, 32)


def test_train_embedding(tmp_path: Path) -> None:
    assert _train("embedding", tmp_path / "run", tmp_path / "cache") == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["train_frames"] > 0 and "val_recall_at_1" in summary["val"]


def test_missing_torch_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    assert _train("descriptor", tmp_path / "run", tmp_path / "cache") == 1
    assert "training needs PyTorch" in capsys.readouterr().err


def test_bad_split_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "descriptor", "--data", DATA, "--out", str(tmp_path), "--split", "0.9",
                 "0.5", "--no-progress"])
    assert code != 0 and "invalid split" in capsys.readouterr().err

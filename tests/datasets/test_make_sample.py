"""datasets/make_sample.py regenerates the bundled sample from the shared copy."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE = REPO_ROOT / "datasets" / "sample" / "rgbd_dataset_freiburg1_rpy"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "make_sample", REPO_ROOT / "datasets" / "make_sample.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_regenerated_prefix_equals_bundled_sample(shared_datasets: Path, tmp_path: Path) -> None:
    script = _load_script()
    src = shared_datasets / "tum" / "rgbd_dataset_freiburg1_rpy"
    dst = tmp_path / "cut"
    script.main(["--src", str(src), "--dst", str(dst), "--count", "4", "--gt-margin", "0.1"])
    rgb = [r for r in (dst / "rgb.txt").read_text().splitlines() if not r.startswith("#")]
    depth = [r for r in (dst / "depth.txt").read_text().splitlines() if not r.startswith("#")]
    assert len(rgb) == 4 and len(depth) == 4
    sample_rgb = (SAMPLE / "rgb.txt").read_text().splitlines()
    assert (dst / "rgb.txt").read_text().splitlines() == sample_rgb[: 3 + 4]
    for row in rgb + depth:
        rel = row.split()[1]
        assert (dst / rel).read_bytes() == (SAMPLE / rel).read_bytes()
    gt_stamps = [
        float(r.split()[0])
        for r in (dst / "groundtruth.txt").read_text().splitlines()
        if not r.startswith("#")
    ]
    t0, t1 = float(rgb[0].split()[0]), float(rgb[-1].split()[0])
    assert min(gt_stamps) >= t0 - 0.1 and max(gt_stamps) <= t1 + 0.1
    assert min(gt_stamps) < t0 and max(gt_stamps) > t1
    assert (dst / "TUM1.yaml").read_bytes() == (SAMPLE / "TUM1.yaml").read_bytes()


def test_size_budget_is_enforced(shared_datasets: Path, tmp_path: Path) -> None:
    script = _load_script()
    src = shared_datasets / "tum" / "rgbd_dataset_freiburg1_rpy"
    with pytest.raises(SystemExit, match="MB"):
        script.main(
            ["--src", str(src), "--dst", str(tmp_path / "x"), "--count", "5", "--max-mb", "0.1"]
        )
    assert not (tmp_path / "x").exists()

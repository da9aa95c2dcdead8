"""``slam eval`` on real files: TUM and KITTI, SE(3) and Sim(3), plots and bad files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from slam.cli.main import main
from slam.geometry.conventions import pose_to_kitti_row, pose_to_t_q_xyzw
from slam.geometry.lie import se3_exp, se3_inv

G = se3_exp(np.array([2.0, 0.5, -1.0, 0.3, 0.2, -0.6]))


def poses(n: int = 50) -> np.ndarray:
    return np.stack(
        [
            se3_exp(np.array([0.2 * i, np.sin(0.4 * i), 0.05 * i, 0.1 * i, 0.02, 0.0]))
            for i in range(n)
        ]
    )


def write_tum(path: Path, stamps: np.ndarray, T: np.ndarray) -> Path:
    """Written here by hand (not with our writer): ``t tx ty tz qx qy qz qw``."""
    lines = ["# timestamp tx ty tz qx qy qz qw"]
    for stamp, pose in zip(stamps, T):
        t, q_xyzw = pose_to_t_q_xyzw(pose)
        lines.append(" ".join(f"{v:.9f}" for v in (stamp, *t, *q_xyzw)))
    path.write_text("\n".join(lines) + "\n")
    return path


def write_kitti(path: Path, T: np.ndarray) -> Path:
    path.write_text("".join(" ".join(f"{v:.12e}" for v in pose_to_kitti_row(p)) + "\n" for p in T))
    return path


def other_world(T: np.ndarray, scale: float = 1.0) -> np.ndarray:
    out = se3_inv(G)[None] @ T
    out[:, :3, 3] *= scale
    return out


def numbers(line: str) -> list[float]:
    return [float(w) for w in line.replace("|", " ").split() if w[0].isdigit()]


def test_tum_files_with_a_rigid_world_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    T = poses()
    stamps = 10.0 + np.arange(len(T)) * 0.05
    gt = write_tum(tmp_path / "gt.txt", stamps, T)
    est = write_tum(tmp_path / "est.txt", stamps[::2] + 0.003, other_world(T[::2]))
    plot = tmp_path / "plot.png"
    assert main(["-q", "eval", "--gt", str(gt), "--est", str(est), "--plot", str(plot)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("ATE rmse ")
    assert numbers(out[0])[0] < 1e-6
    assert out[1] == "25 matched poses, se3 alignment"
    assert cv2.imread(str(plot)) is not None


def test_sim3_recovers_the_scale_of_a_monocular_estimate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    T = poses()
    stamps = np.arange(len(T)) * 0.1
    gt = write_tum(tmp_path / "gt.txt", stamps, T)
    est = write_tum(tmp_path / "est.txt", stamps, other_world(T, scale=0.25))
    assert main(["-q", "eval", "--gt", str(gt), "--est", str(est), "--sim3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert numbers(out[0])[0] < 1e-6
    assert out[1] == "50 matched poses, sim3 alignment, scale 4.0000"
    assert main(["-q", "eval", "--gt", str(gt), "--est", str(est)]) == 0
    assert numbers(capsys.readouterr().out.splitlines()[0])[0] > 0.1  # se3 cannot fix scale


def test_kitti_files_are_matched_by_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    T = poses(30)
    noisy = other_world(T)
    noisy[:, :3, 3] += 0.1 * np.random.default_rng(0).standard_normal((30, 3))
    gt = write_kitti(tmp_path / "gt.txt", T)
    est = write_kitti(tmp_path / "est.txt", noisy)
    assert main(["-q", "eval", "--format", "kitti", "--gt", str(gt), "--est", str(est)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "30 matched poses, se3 alignment"
    assert 0.05 < numbers(out[0])[0] < 0.25


def one_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("slam: error: "), err
    return err[0]


def test_missing_and_malformed_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    T = poses(10)
    gt = write_tum(tmp_path / "gt.txt", np.arange(10.0), T)
    assert main(["-q", "eval", "--gt", str(gt), "--est", str(tmp_path / "none.txt")]) == 7
    assert "none.txt" in one_error(capsys)
    bad = tmp_path / "bad.txt"
    bad.write_text("1.0 2.0 3.0\n")
    assert main(["-q", "eval", "--gt", str(gt), "--est", str(bad)]) == 7
    assert "bad.txt:1" in one_error(capsys)
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00\x01" * 20)
    assert main(["-q", "eval", "--gt", str(gt), "--est", str(binary)]) == 7
    assert "binary.txt" in one_error(capsys)


def test_no_overlap_in_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    T = poses(10)
    gt = write_tum(tmp_path / "gt.txt", np.arange(10.0), T)
    est = write_tum(tmp_path / "est.txt", np.arange(10.0) + 500.0, T)
    assert main(["-q", "eval", "--gt", str(gt), "--est", str(est)]) == 7
    assert "matches the ground truth" in one_error(capsys)

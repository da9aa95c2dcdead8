"""TUM and KITTI trajectory files, cross-checked against evo's readers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from evo.tools import file_interface
from scipy.spatial.transform import Rotation

from slam.errors import EvaluationError
from slam.io.trajectory_io import (
    read_kitti_poses,
    read_tum_trajectory,
    write_kitti_trajectory,
    write_tum_trajectory,
)
from slam.io.types import Trajectory


def _random_trajectory(n: int, seed: int = 0) -> Trajectory:
    rng = np.random.default_rng(seed)
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, :3, :3] = Rotation.random(n, random_state=seed).as_matrix()
    T[:, :3, 3] = rng.normal(scale=3.0, size=(n, 3))
    return Trajectory(1305031229.5 + np.arange(n) / 30.0, T)


def test_tum_known_line(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    half = np.sqrt(0.5)
    path.write_text(f"# comment\n\n1.5 1 2 3 0 0 {half} {half}\n")
    traj = read_tum_trajectory(path)
    assert traj.stamps.tolist() == [1.5]
    expected = np.array([[0, -1, 0, 1], [1, 0, 0, 2], [0, 0, 1, 3], [0, 0, 0, 1]], dtype=float)
    np.testing.assert_allclose(traj.T_world_cam[0], expected, atol=1e-12)


def test_tum_commas_and_unnormalised_quaternion(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("2.0,0,0,0,0,0,0,2\n")
    np.testing.assert_allclose(read_tum_trajectory(path).T_world_cam[0], np.eye(4), atol=1e-15)


def test_tum_round_trip_and_evo(tmp_path: Path) -> None:
    traj = _random_trajectory(20)
    path = tmp_path / "sub" / "traj.txt"
    write_tum_trajectory(path, traj)
    back = read_tum_trajectory(path)
    np.testing.assert_allclose(back.stamps, traj.stamps, atol=1e-6, rtol=0)
    np.testing.assert_allclose(back.T_world_cam, traj.T_world_cam, atol=1e-8)
    evo_traj = file_interface.read_tum_trajectory_file(str(path))
    np.testing.assert_allclose(np.stack(evo_traj.poses_se3), traj.T_world_cam, atol=1e-8)
    np.testing.assert_allclose(evo_traj.timestamps, traj.stamps, atol=1e-6, rtol=0)


def test_kitti_round_trip_and_evo(tmp_path: Path) -> None:
    traj = _random_trajectory(15, seed=3)
    path = tmp_path / "poses.txt"
    write_kitti_trajectory(path, traj)
    back = read_kitti_poses(path, stamps=traj.stamps)
    np.testing.assert_array_equal(back.stamps, traj.stamps)
    np.testing.assert_allclose(back.T_world_cam, traj.T_world_cam, atol=1e-8)
    evo_traj = file_interface.read_kitti_poses_file(str(path))
    np.testing.assert_allclose(np.stack(evo_traj.poses_se3), traj.T_world_cam, atol=1e-8)
    assert read_kitti_poses(path).stamps.tolist() == list(range(15))


def test_shared_ground_truth_files(shared_datasets: Path) -> None:
    gt_path = shared_datasets / "tum" / "rgbd_dataset_freiburg1_rpy" / "groundtruth.txt"
    gt = read_tum_trajectory(gt_path)
    assert len(gt) == 2742
    assert gt.stamps[0] == 1305031225.9334
    np.testing.assert_allclose(gt.positions[0], [1.3357, 0.6698, 1.6180])
    evo_traj = file_interface.read_tum_trajectory_file(str(gt_path))
    np.testing.assert_allclose(np.stack(evo_traj.poses_se3), gt.T_world_cam, atol=1e-9)
    poses = read_kitti_poses(shared_datasets / "kitti" / "poses" / "06.txt")
    assert len(poses) == 51
    np.testing.assert_allclose(poses.positions[1], [-1.401751e-02, -2.820321e-02, 1.198998])


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("1 2 3 4 5 6 7 8\n1 2 3\n", r"t\.txt:2: expected 8 numbers, found 3"),
        ("# h\n1 2 3 4 5 6 7 x\n", r"t\.txt:2: not a number"),
        ("1 2 3 4 0 0 0 0\n", r"t\.txt:1: zero quaternion"),
        ("1 2 3 4 nan 0 0 1\n", r"t\.txt:1: non-finite"),
        ("# only comments\n", "no poses"),
    ],
)
def test_tum_malformed(tmp_path: Path, text: str, pattern: str) -> None:
    path = tmp_path / "t.txt"
    path.write_text(text)
    with pytest.raises(EvaluationError, match=pattern):
        read_tum_trajectory(path)


def test_kitti_malformed(tmp_path: Path) -> None:
    path = tmp_path / "k.txt"
    path.write_text("1 0 0 0 0 1 0 0 0 0 1 0\n1 0 0 0 0 1 0 0 0 0 1\n")
    with pytest.raises(EvaluationError, match=r"k\.txt:2: expected 12"):
        read_kitti_poses(path)
    path.write_text("1 0 0 0 0 1 0 0 0 0 1 0\n")
    with pytest.raises(EvaluationError, match="1 poses but 2 timestamps"):
        read_kitti_poses(path, stamps=[0.0, 0.1])


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match="not found"):
        read_tum_trajectory(tmp_path / "missing.txt")

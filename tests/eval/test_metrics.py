"""ATE and RPE against synthetic trajectories with a known transform, scale and noise."""

from __future__ import annotations

import numpy as np
import pytest

from slam.errors import EvaluationError
from slam.eval.metrics import ate, rpe
from slam.geometry.lie import se3_exp, se3_inv
from slam.io.types import Trajectory


def fake_trajectory(n: int = 60, dt: float = 0.1) -> Trajectory:
    """A 3-D wiggle with changing orientation (not planar, so Umeyama is well posed)."""
    poses = [
        se3_exp(np.array([np.sin(0.2 * i), 0.05 * i, np.cos(0.15 * i), 0.03 * i, 0.02 * i, 0.01]))
        for i in range(n)
    ]
    return Trajectory(np.arange(n) * dt, np.stack(poses))


def change_world(traj: Trajectory, T_new_old: np.ndarray, scale: float = 1.0) -> Trajectory:
    """Express ``traj`` in another world frame, positions multiplied by ``scale``."""
    poses = T_new_old[None] @ traj.T_world_cam
    poses[:, :3, 3] *= scale
    return Trajectory(traj.stamps.copy(), poses)


G = se3_exp(np.array([1.0, -2.0, 0.5, 0.4, -0.3, 1.2]))  # ground-truth-world from est-world


def test_se3_alignment_recovers_a_rigid_world_change() -> None:
    gt = fake_trajectory()
    est = change_world(gt, se3_inv(G))
    result = ate(gt, est, "se3")
    assert result.rmse_m < 1e-9
    assert result.n_matched == len(gt)
    assert result.scale == 1.0
    np.testing.assert_allclose(result.T_align, G, atol=1e-9)
    np.testing.assert_allclose(result.est_aligned.T_world_cam, gt.T_world_cam, atol=1e-9)


def test_no_alignment_reports_the_raw_offset() -> None:
    gt = fake_trajectory()
    offset = np.array([0.3, -0.4, 1.2])
    est = Trajectory(gt.stamps, gt.T_world_cam.copy())
    est.T_world_cam[:, :3, 3] += offset
    result = ate(gt, est, "none")
    assert result.rmse_m == pytest.approx(np.linalg.norm(offset), abs=1e-12)
    assert result.max_m == pytest.approx(np.linalg.norm(offset), abs=1e-12)
    np.testing.assert_array_equal(result.T_align, np.eye(4))


def test_sim3_recovers_the_scale_and_se3_does_not() -> None:
    gt = fake_trajectory()
    est = change_world(gt, se3_inv(G), scale=1 / 2.5)
    sim3 = ate(gt, est, "sim3")
    assert sim3.scale == pytest.approx(2.5, rel=1e-9)
    assert sim3.rmse_m < 1e-9
    np.testing.assert_allclose(sim3.T_align[:3, :3], 2.5 * G[:3, :3], atol=1e-9)
    np.testing.assert_allclose(sim3.T_align[:3, 3], G[:3, 3], atol=1e-9)
    assert ate(gt, est, "se3").rmse_m > 0.1


def test_origin_alignment_makes_the_first_poses_equal() -> None:
    gt = fake_trajectory()
    est = change_world(gt, se3_inv(G))
    est.T_world_cam[1:, :3, 3] += 0.01  # all but the first pose off by a known vector
    result = ate(gt, est, "origin")
    np.testing.assert_allclose(result.T_align, G, atol=1e-9)
    errors = np.full(len(gt), np.sqrt(3) * 0.01)
    errors[0] = 0.0
    np.testing.assert_allclose(result.errors_m, errors, atol=1e-9)


def test_statistics_match_numpy_on_known_noise() -> None:
    gt = fake_trajectory(80)
    noise = np.random.default_rng(3).normal(0.0, 0.05, (80, 3))
    est = Trajectory(gt.stamps, gt.T_world_cam.copy())
    est.T_world_cam[:, :3, 3] += noise
    result = ate(gt, est, "none")
    norms = np.linalg.norm(noise, axis=1)
    np.testing.assert_allclose(result.errors_m, norms, atol=1e-12)
    assert result.rmse_m == pytest.approx(np.sqrt(np.mean(norms**2)), abs=1e-12)
    assert result.mean_m == pytest.approx(norms.mean(), abs=1e-12)
    assert result.median_m == pytest.approx(np.median(norms), abs=1e-12)
    assert result.max_m == pytest.approx(norms.max(), abs=1e-12)


def test_the_input_estimate_is_not_modified() -> None:
    gt = fake_trajectory()
    est = change_world(gt, se3_inv(G), scale=0.5)
    before = est.T_world_cam.copy()
    ate(gt, est, "sim3")
    np.testing.assert_array_equal(est.T_world_cam, before)


def test_association_by_nearest_stamp_within_tolerance() -> None:
    gt = fake_trajectory(60)
    sub = Trajectory(gt.stamps[::3] + 0.004, gt.T_world_cam[::3])  # 4 ms late, every 3rd
    result = ate(gt, sub, "se3", max_diff_s=0.01)
    assert result.n_matched == 20
    assert result.rmse_m < 1e-9
    np.testing.assert_allclose(result.gt.stamps, gt.stamps[::3])
    with pytest.raises(EvaluationError, match=r"within 0\.001 s"):
        ate(gt, sub, "se3", max_diff_s=0.001)


def test_errors_for_no_overlap_too_few_matches_and_empty() -> None:
    gt = fake_trajectory()
    with pytest.raises(EvaluationError, match="matches the ground truth"):
        ate(gt, Trajectory(gt.stamps + 100.0, gt.T_world_cam), "se3")
    with pytest.raises(EvaluationError, match="need at least 3"):
        ate(gt, Trajectory(gt.stamps[:2], gt.T_world_cam[:2]), "se3")
    with pytest.raises(EvaluationError, match="empty"):
        ate(gt, Trajectory(np.zeros(0), np.zeros((0, 4, 4))), "se3")
    with pytest.raises(EvaluationError, match="unknown alignment"):
        ate(gt, gt, "affine")  # type: ignore[arg-type]


def test_rpe_of_a_doubled_trajectory_is_the_step_length() -> None:
    gt = fake_trajectory()
    est = Trajectory(gt.stamps, gt.T_world_cam.copy())
    est.T_world_cam[:, :3, 3] *= 2.0
    steps = np.linalg.norm(np.diff(gt.positions, axis=0), axis=1)
    result = rpe(gt, est, delta=1)
    np.testing.assert_allclose(result.errors, steps, atol=1e-12)
    assert result.unit == "m"
    assert rpe(gt, est, align="sim3").stats.rmse < 1e-9
    assert rpe(gt, est, relation="rotation").stats.max < 1e-6


def test_rpe_rotation_of_a_constant_extra_turn() -> None:
    n = 40
    yaw = np.deg2rad(2.0) * np.arange(n)
    gt_poses = np.stack([se3_exp(np.array([0.1 * i, 0, 0, 0, 0, yaw[i]])) for i in range(n)])
    est_poses = np.stack([se3_exp(np.array([0.1 * i, 0, 0, 0, 0, 1.5 * yaw[i]])) for i in range(n)])
    gt, est = Trajectory(np.arange(n) * 0.1, gt_poses), Trajectory(np.arange(n) * 0.1, est_poses)
    result = rpe(gt, est, delta=2, relation="rotation")
    np.testing.assert_allclose(result.errors, 2.0, atol=1e-9)  # 2 frames x 1 degree extra
    assert result.unit == "deg"

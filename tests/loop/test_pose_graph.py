"""Essential-graph optimisation with g2o: conventions, drift removal, fixed scale."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from slam.errors import GeometryError
from slam.geometry.alignment import similarity_matrix
from slam.geometry.lie import make_pose, se3_inv, sim3_exp, sim3_inv, sim3_log
from slam.loop.pose_graph import (
    PoseGraphEdge,
    optimize_essential_graph,
    relative_sim3,
    sim3_to_se3,
)

pytest.importorskip("g2opy")
Array = NDArray[np.float64]
N_KF = 30


def _ring_S_cam_world(n: int = N_KF, radius: float = 10.0) -> dict[int, Array]:
    """Ground-truth keyframes on a circle in the x-z plane, looking along the tangent."""
    out = {}
    for k in range(n):
        a = 2.0 * np.pi * k / n
        c = np.array([radius * np.cos(a), 0.3 * np.sin(3 * a), radius * np.sin(a)])
        z = np.array([-np.sin(a), 0.0, np.cos(a)])
        y = np.array([0.0, 1.0, 0.0])
        R_world_cam = np.c_[np.cross(y, z), y, z]
        out[k] = se3_inv(make_pose(R_world_cam, c))
    return out


def _drifted_problem(fix_scale: bool, exact: bool = False, seed: int = 0
                     ) -> tuple[dict[int, Array], dict[int, Array], list[PoseGraphEdge]]:
    """Ground truth, the odometry chain (drifting), and odometry + one true loop edge.

    Each odometry step has an error ``E = exp(bias + noise)`` on the right of the true
    relative similarity, the bias mostly in yaw, height and scale (what a loop can see:
    a constant forward bias on a circle only changes its radius and still closes);
    with ``exact`` the edges are true and only the start drifts.
    """
    rng = np.random.default_rng(seed)
    gt = _ring_S_cam_world()
    bias = np.array([0.0, -0.02, 0.01, 0.002, 0.01, -0.002, 0.0 if fix_scale else 0.01])
    init = {0: gt[0]}
    edges = []
    for k in range(N_KF - 1):
        noise = 0.002 * rng.normal(size=7)
        if fix_scale:
            noise[6] = 0.0
        S_rel = relative_sim3(gt[k], gt[k + 1])
        S_meas = S_rel @ sim3_exp(bias + noise)
        init[k + 1] = sim3_inv(S_meas) @ init[k]
        edges.append(PoseGraphEdge(k, k + 1, S_rel if exact else S_meas))
    edges.append(PoseGraphEdge(N_KF - 1, 0, relative_sim3(gt[N_KF - 1], gt[0])))
    return gt, init, edges


def _centres(S: dict[int, Array]) -> Array:
    return np.array([sim3_inv(S[k])[:3, 3] for k in sorted(S)])


def _ate(S: dict[int, Array], gt: dict[int, Array]) -> float:
    d = _centres(S) - _centres(gt)
    return float(np.sqrt((d**2).sum(1).mean()))


def _scale(S: Array) -> float:
    return float(np.cbrt(np.linalg.det(S[:3, :3])))


@pytest.mark.parametrize("fix_scale", [False, True])
def test_loop_edge_removes_most_of_the_drift(fix_scale: bool) -> None:
    gt, init, edges = _drifted_problem(fix_scale)
    ate0 = _ate(init, gt)
    assert ate0 > 1.0  # the chain really drifts
    opt = optimize_essential_graph(init, edges, fixed={0}, fix_scale=fix_scale)
    assert _ate(opt, gt) * 5.0 <= ate0
    np.testing.assert_array_equal(opt[0], init[0])
    if fix_scale:
        assert all(abs(_scale(S) - 1.0) < 1e-12 for S in opt.values())
    else:  # the scale drift of the chain is corrected too
        assert abs(_scale(init[N_KF - 1]) - 1.0) > 0.2
        assert max(abs(_scale(S) - 1.0) for S in opt.values()) < 0.05


@pytest.mark.parametrize("fix_scale", [False, True])
def test_exact_measurements_give_back_ground_truth(fix_scale: bool) -> None:
    gt, init, edges = _drifted_problem(fix_scale, exact=True)
    opt = optimize_essential_graph(init, edges, fixed={0}, fix_scale=fix_scale)
    for k in gt:
        np.testing.assert_allclose(opt[k], gt[k], atol=1e-6)


@pytest.mark.parametrize("fix_scale", [False, True])
def test_edge_direction_convention(fix_scale: bool) -> None:
    """An edge (i, j, S_cam_i_cam_j) pulls the free vertex onto the truth from either side."""
    S_a = similarity_matrix(np.eye(3), np.array([0.1, 0.2, 0.3]), 1.0)
    S_b = sim3_exp(np.array([0.5, -0.2, 0.3, 0.2, -0.4, 0.3, 0.0 if fix_scale else -0.4])) @ S_a
    start_b = sim3_exp(np.array([0.2, 0.1, -0.1, 0.05, 0.05, 0.0, 0.0 if fix_scale else 0.1])) @ S_b
    for edge in (PoseGraphEdge(0, 1, relative_sim3(S_a, S_b)),
                 PoseGraphEdge(1, 0, relative_sim3(S_b, S_a))):
        opt = optimize_essential_graph({0: S_a, 1: start_b}, [edge], fixed=[0],
                                       fix_scale=fix_scale)
        np.testing.assert_allclose(opt[1], S_b, atol=1e-9)
        assert np.abs(start_b - S_b).max() > 0.1


@pytest.mark.parametrize("fix_scale", [False, True])
def test_information_is_in_rho_phi_sigma_order(fix_scale: bool) -> None:
    """Two conflicting edges, one trusted only in rotation and one only in translation:
    the residual ``log(S_i_j S_j S_i^-1)`` of the first loses its rotation part, that of
    the second its translation part; a wrong axis order (or frame) would swap them. The
    SE(3) graph weighs g2o's EdgeSE3 error, equal to ours to first order only."""
    M1 = sim3_exp(np.array([1.0, 0.0, 0.0, 0.0, 0.05, 0.0, 0.0]))
    M2 = sim3_exp(np.array([0.0, 0.0, 2.0, 0.0, -0.05, 0.0, 0.0]))
    rot_only = np.diag([1e-6] * 3 + [1e6] * 3 + [1.0])
    trans_only = np.diag([1e6] * 3 + [1e-6] * 3 + [1.0])
    edges = [PoseGraphEdge(1, 0, M1, rot_only), PoseGraphEdge(1, 0, M2, trans_only)]
    opt = optimize_essential_graph({0: np.eye(4), 1: np.eye(4)}, edges, fixed={0},
                                   fix_scale=fix_scale, iterations=50)
    r1 = sim3_log(M1 @ opt[0] @ sim3_inv(opt[1]))
    r2 = sim3_log(M2 @ opt[0] @ sim3_inv(opt[1]))
    assert np.abs(r1[3:6]).max() < 1e-4
    assert np.abs(r2[:3]).max() < (0.015 if fix_scale else 1e-4)
    assert np.abs(r1[:3]).max() > 1.0 and np.abs(r2[3:6]).max() > 0.09


def test_relative_sim3_and_sim3_to_se3() -> None:
    rng = np.random.default_rng(3)
    S_i = sim3_exp(rng.normal(size=7) * 0.5)
    S_j = sim3_exp(rng.normal(size=7) * 0.5)
    S_ij = relative_sim3(S_i, S_j)
    np.testing.assert_allclose(S_ij @ S_j, S_i, atol=1e-12)
    T, s = sim3_to_se3(S_i)
    assert s == pytest.approx(np.exp(_log_scale(S_i)), rel=1e-12)
    np.testing.assert_allclose(T[:3, :3].T @ T[:3, :3], np.eye(3), atol=1e-12)
    xyz = rng.normal(size=(5, 3)) + np.array([0.0, 0.0, 5.0])
    a = xyz @ S_i[:3, :3].T + S_i[:3, 3]
    b = xyz @ T[:3, :3].T + T[:3, 3]
    np.testing.assert_allclose(a, s * b, atol=1e-12)  # same rays, depth scaled by s


def _log_scale(S: Array) -> float:
    return float(np.log(np.linalg.det(S[:3, :3])) / 3.0)


def test_malformed_graphs_raise() -> None:
    S = {0: np.eye(4), 1: np.eye(4)}
    with pytest.raises(GeometryError):
        optimize_essential_graph(S, [PoseGraphEdge(0, 7, np.eye(4))], {0}, fix_scale=False)
    scaled = similarity_matrix(np.eye(3), np.zeros(3), 0.7)
    with pytest.raises(GeometryError):
        optimize_essential_graph(S, [PoseGraphEdge(0, 1, scaled)], {0}, fix_scale=True)
    with pytest.raises(GeometryError):
        optimize_essential_graph(S, [PoseGraphEdge(0, 1, np.eye(4), np.eye(3))], {0},
                                 fix_scale=False)

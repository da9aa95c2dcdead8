"""Global BA after a loop: the solve, and the write-back with keyframes and points
created while it ran."""

from __future__ import annotations

import contextlib

import numpy as np

from slam.geometry.lie import se3_exp, se3_inv
from slam.loop.global_ba import GlobalBundleAdjuster, apply_global_ba
from slam.map.keyframe import KeyFrame
from slam.mapping.bundle import build_global_problem
from tests.loop.ring_map import build_ring_map
from tests.map.factories import K_SMALL, make_frame


def test_global_ba_brings_perturbed_keyframes_back_to_the_truth() -> None:
    m, gt, _ = build_ring_map(n_kf=24, n_points=3000)
    rng = np.random.default_rng(1)
    for k, kf in m.keyframes.items():
        if k != m.origin_kf_id:
            kf.T_cam_world = se3_exp(rng.normal(scale=0.01, size=6)) @ kf.T_cam_world
    gba = GlobalBundleAdjuster(m, K_SMALL, 0.0, 10, contextlib.nullcontext)
    gba.start(threaded=True)
    gba.wait()
    assert gba.runs == 1
    err = [np.linalg.norm(se3_inv(m.keyframes[k].T_cam_world)[:3, 3] - se3_inv(gt[k])[:3, 3])
           for k in m.keyframes]
    assert max(err) < 1e-3


def test_keyframes_and_points_added_meanwhile_follow_the_correction() -> None:
    m, _, _ = build_ring_map(n_kf=12, n_points=1500)
    lp = build_global_problem(m, K_SMALL, 0.0)
    assert lp is not None
    # While the BA "ran": a new keyframe (child of keyframe 5) with a point of its own.
    parent = m.keyframes[5]
    T_child = se3_exp(np.array([0.05, 0, 0, 0, 0.02, 0])) @ parent.T_cam_world
    child = KeyFrame(m.new_keyframe_id(), make_frame(np.array([[160.0, 120.0]])), T_child.copy())
    m.add_keyframe(child)
    child.parent_id = 5
    parent.children.add(child.id)
    xyz_cam = np.array([0.1, -0.2, 2.0])
    xyz_world = se3_inv(T_child)[:3, :3] @ xyz_cam + se3_inv(T_child)[:3, 3]
    mp = m.add_point(xyz_world, child, 0)
    # The BA result: every keyframe moved by the same world-side change D.
    D = se3_exp(np.array([0.1, -0.05, 0.02, 0.03, -0.02, 0.05]))
    T_opt = np.array([T @ se3_inv(D) for T in lp.problem.T_cam_world])
    xyz_opt = lp.problem.xyz_world @ D[:3, :3].T + D[:3, 3]
    apply_global_ba(m, lp, T_opt, xyz_opt)
    assert np.allclose(child.T_cam_world, T_child @ se3_inv(D), atol=1e-9)
    new = m.points[mp.id].xyz_world
    cam = child.T_cam_world[:3, :3] @ new + child.T_cam_world[:3, 3]
    assert np.allclose(cam, xyz_cam, atol=1e-9)  # it stays where its keyframe saw it

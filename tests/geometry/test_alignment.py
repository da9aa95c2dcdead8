"""Tests of slam.geometry.alignment against exact similarities and evo's Umeyama."""

from __future__ import annotations

import numpy as np
import pytest
from evo.core.geometry import umeyama_alignment

from slam.errors import GeometryError
from slam.geometry.alignment import (
    COINCIDENT,
    COLLINEAR,
    NOT_FINITE,
    OK,
    align_trajectories,
    apply_similarity_to_poses,
    similarity_matrix,
    umeyama,
    umeyama_batch,
)
from slam.geometry.lie import make_pose, so3_exp

R_GT = so3_exp(np.array([0.4, -1.1, 2.0]))
T_GT = np.array([1.5, -3.0, 0.7])
S_GT = 2.5


def random_points(seed: int, n: int = 50) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3)) * np.array([3.0, 1.0, 2.0])


@pytest.mark.parametrize("with_scale", [True, False])
def test_umeyama_exact(with_scale: bool) -> None:
    src = random_points(0)
    s = S_GT if with_scale else 1.0
    dst = s * src @ R_GT.T + T_GT
    R, t, s_est = umeyama(src, dst, with_scale)
    np.testing.assert_allclose(R, R_GT, atol=1e-12)
    np.testing.assert_allclose(t, T_GT, atol=1e-12)
    assert s_est == pytest.approx(s, abs=1e-12)


@pytest.mark.parametrize("with_scale", [True, False])
def test_umeyama_matches_evo_with_noise(with_scale: bool) -> None:
    rng = np.random.default_rng(1)
    src = random_points(1)
    dst = S_GT * src @ R_GT.T + T_GT + rng.normal(scale=0.3, size=src.shape)
    R, t, s = umeyama(src, dst, with_scale)
    R_evo, t_evo, s_evo = umeyama_alignment(src.T, dst.T, with_scale)
    np.testing.assert_allclose(R, R_evo, atol=1e-10)
    np.testing.assert_allclose(t, t_evo, atol=1e-10)
    assert s == pytest.approx(s_evo, abs=1e-10)
    assert np.linalg.det(R) == pytest.approx(1.0)


def test_umeyama_reflection_is_avoided() -> None:
    src = random_points(2)
    dst = src * np.array([1.0, 1.0, -1.0])  # a mirror image: best proper rotation, not a reflection
    R, _, _ = umeyama(src, dst, True)
    assert np.linalg.det(R) == pytest.approx(1.0)
    R_evo, _, _ = umeyama_alignment(src.T, dst.T, True)
    np.testing.assert_allclose(R, R_evo, atol=1e-10)


def test_align_trajectories_poses_and_positions() -> None:
    rng = np.random.default_rng(3)
    T_world_cam = np.stack(
        [make_pose(so3_exp(rng.normal(size=3)), rng.normal(size=3) * 4) for _ in range(30)]
    )
    S = similarity_matrix(R_GT, T_GT, S_GT)
    ref = apply_similarity_to_poses(S, T_world_cam)
    S_est = align_trajectories(T_world_cam, ref)
    np.testing.assert_allclose(S_est, S, atol=1e-10)
    S_pos = align_trajectories(T_world_cam[:, :3, 3], ref[:, :3, 3])
    np.testing.assert_allclose(S_pos, S, atol=1e-10)
    # Rotations stay orthonormal and pick up R_GT; positions are moved by the similarity.
    np.testing.assert_allclose(ref[:, :3, :3], R_GT @ T_world_cam[:, :3, :3], atol=1e-12)
    np.testing.assert_allclose(ref[:, :3, 3], S_GT * T_world_cam[:, :3, 3] @ R_GT.T + T_GT)
    # Aligning on the first poses only ignores a corrupted tail.
    ref_bad = ref.copy()
    ref_bad[20:, :3, 3] += 10.0
    np.testing.assert_allclose(align_trajectories(T_world_cam, ref_bad, n_first=20), S, atol=1e-10)
    S_rigid = align_trajectories(T_world_cam, ref, with_scale=False)
    assert np.linalg.det(S_rigid[:3, :3]) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "src",
    [
        np.zeros((2, 3)) + np.arange(2)[:, None],  # too few
        np.ones((10, 3)),  # coincident
        np.outer(np.arange(10.0), [1.0, 2.0, 3.0]),  # collinear
        np.where(np.eye(4, 3) > 0, np.nan, 1.0) + np.arange(12).reshape(4, 3),  # NaN
    ],
)
def test_umeyama_degenerate(src: np.ndarray) -> None:
    with pytest.raises(GeometryError):
        umeyama(src, src + 1.0, True)


def test_align_bad_shapes() -> None:
    with pytest.raises(GeometryError):
        align_trajectories(np.zeros((5, 2)), np.zeros((5, 2)))


@pytest.mark.parametrize("with_scale", [True, False])
def test_umeyama_batch_agrees_with_evo_and_names_the_degenerate_problems(
        with_scale: bool) -> None:
    rng = np.random.default_rng(8)
    src = rng.normal(size=(6, 10, 3))
    dst = S_GT * src @ R_GT.T + T_GT + rng.normal(0, 0.05, (6, 10, 3))
    src[3] = src[3, :1]  # every source point the same
    src[4] = np.outer(np.linspace(-1, 1, 10), [1.0, 2.0, 0.5])  # on one line
    dst[5, 4, 1] = np.nan
    R, t, s, code = umeyama_batch(src, dst, with_scale)
    assert code.tolist() == [OK, OK, OK, COINCIDENT, COLLINEAR, NOT_FINITE]
    for b in range(3):
        R_evo, t_evo, s_evo = umeyama_alignment(src[b].T, dst[b].T, with_scale)
        np.testing.assert_allclose(R[b], R_evo, atol=1e-10)
        np.testing.assert_allclose(t[b], t_evo, atol=1e-10)
        assert s[b] == pytest.approx(s_evo, rel=1e-10)
    with pytest.raises(GeometryError, match="collinear"):
        umeyama(src[4], dst[4], with_scale)
    with pytest.raises(GeometryError, match="coincide"):
        umeyama(src[3], dst[3], with_scale)

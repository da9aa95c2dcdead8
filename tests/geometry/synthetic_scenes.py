"""Synthetic two-view scenes with exact ground truth, shared by the geometry tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from slam.geometry.lie import hat, make_pose, so3_exp, so3_log

Array = NDArray[np.float64]

K = np.array([[520.0, 0.0, 320.0], [0.0, 510.0, 240.0], [0.0, 0.0, 1.0]])
WIDTH, HEIGHT = 640, 480


@dataclass
class Scene:
    """Points ``xyz_world`` (N, 3), poses ``T_cam1_world``, ``T_cam2_world``, pixels (N, 2)."""

    xyz_world: Array
    T_cam1_world: Array
    T_cam2_world: Array
    uv1: Array
    uv2: Array
    outliers: NDArray[np.bool_]

    @property
    def T_cam2_cam1(self) -> Array:
        return self.T_cam2_world @ np.linalg.inv(self.T_cam1_world)


def project(T_cam_world: Array, xyz_world: Array, K_: Array = K) -> Array:
    """Ideal pixels (N, 2) of world points (N, 3)."""
    xyz = xyz_world @ T_cam_world[:3, :3].T + T_cam_world[:3, 3]
    uvw = xyz @ K_.T
    return uvw[:, :2] / uvw[:, 2:]


def random_pose(rng: np.random.Generator, rot_deg: float, trans: float) -> Array:
    """A pose with a random rotation of ``rot_deg`` degrees and translation norm ``trans``."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    t = rng.normal(size=3)
    t = t / np.linalg.norm(t) * trans
    return make_pose(so3_exp(axis * np.radians(rot_deg)), t)


def make_scene(
    rng: np.random.Generator,
    n: int = 300,
    *,
    kind: str = "general",
    noise_px: float = 0.0,
    outlier_ratio: float = 0.0,
    rot_deg: float = 5.0,
    baseline: float = 0.6,
    T_cam2_cam1: Array | None = None,
    T_cam1_world: Array | None = None,
) -> Scene:
    """Random points seen by two cameras; ``kind`` is 'general', 'planar' or 'rotation'.

    Planar scenes lie on the tilted plane ``z = 5 / (1 - y/z)`` of camera 1 (closer at
    the top of the image); the default motion is mostly sideways.
    """
    T1 = np.eye(4) if T_cam1_world is None else T_cam1_world
    if T_cam2_cam1 is not None:
        T21 = T_cam2_cam1
    else:
        T21 = random_pose(rng, rot_deg, 1.0)
        t = np.array([1.0, 0.2 * rng.normal(), 0.2 * rng.normal()])
        T21[:3, 3] = 0.0 if kind == "rotation" else t * (baseline / np.linalg.norm(t))
    T2 = T21 @ T1
    pts: list[Array] = []
    while sum(len(p) for p in pts) < n:
        uv = rng.uniform([20, 20], [WIDTH - 20, HEIGHT - 20], size=(4 * n, 2))
        xn = (uv - K[:2, 2]) / np.diag(K)[:2]
        planar = kind == "planar"
        z = 5.0 / (1.0 - xn[:, 1]) if planar else rng.uniform(3.0, 9.0, size=len(uv))
        xyz_c1 = np.column_stack([xn * z[:, None], z])
        uv2 = project(T21, xyz_c1)
        keep = (xyz_c1 @ T21[:3, :3].T + T21[:3, 3])[:, 2] > 0.5
        keep &= (uv2 > 0).all(axis=1) & (uv2[:, 0] < WIDTH) & (uv2[:, 1] < HEIGHT)
        pts.append(xyz_c1[keep])
    xyz_c1 = np.concatenate(pts)[:n]
    T1_inv = np.linalg.inv(T1)
    xyz_w = xyz_c1 @ T1_inv[:3, :3].T + T1_inv[:3, 3]
    uv1, uv2 = project(T1, xyz_w), project(T2, xyz_w)
    uv1 = uv1 + rng.normal(scale=noise_px, size=uv1.shape)
    uv2 = uv2 + rng.normal(scale=noise_px, size=uv2.shape)
    out = np.zeros(n, dtype=bool)
    n_out = round(outlier_ratio * n)
    if n_out:
        out[rng.choice(n, n_out, replace=False)] = True
        uv2[out] = rng.uniform([0, 0], [WIDTH, HEIGHT], size=(n_out, 2))
    return Scene(xyz_w, T1, T2, uv1, uv2, out)


def rotation_angle_deg(R_a: Array, R_b: Array) -> float:
    """Angle (degrees) of ``R_a^T R_b``."""
    return float(np.degrees(np.linalg.norm(so3_log(R_a.T @ R_b))))


def direction_angle_deg(a: Array, b: Array) -> float:
    """Angle (degrees) between two 3-vectors."""
    return float(np.degrees(np.arctan2(np.linalg.norm(np.cross(a, b)), a @ b)))


# ----------------------------------------------------------------------------- two-view helpers

K_INV = np.linalg.inv(K)
# Mostly sideways motion over the tilted plane z - y = 5: its two-fold homography
# ambiguity is resolved by cheirality.
T_PLANAR = make_pose(so3_exp(np.radians([1.0, -3.0, 2.0])), np.array([0.6, 0.0, 0.0]))
PLANE_N = np.array([0.0, -1.0, 1.0]) / np.sqrt(2.0)
PLANE_D = 5.0 / np.sqrt(2.0)


def normalised(uv: Array) -> Array:
    """Normalised coordinates (N, 2) of ideal pixels (N, 2) under :data:`K`."""
    return (np.c_[uv, np.ones(len(uv))] @ K_INV.T)[:, :2]


def gt_essential(sc: Scene) -> Array:
    """Exact essential matrix ``[t]x R`` of a scene's motion."""
    T = sc.T_cam2_cam1
    return hat(T[:3, 3]) @ T[:3, :3]


def gt_homography() -> Array:
    """Exact pixel homography of the plane of :func:`planar_scene` under :data:`T_PLANAR`."""
    R, t = T_PLANAR[:3, :3], T_PLANAR[:3, 3]
    return K @ (R + np.outer(t, PLANE_N) / PLANE_D) @ K_INV


def same_up_to_scale(A: Array, B: Array, tol: float) -> bool:
    """Whether two matrices agree (max abs difference < ``tol``) after normalising, up to sign."""
    a, b = A / np.linalg.norm(A), B / np.linalg.norm(B)
    return min(np.abs(a - b).max(), np.abs(a + b).max()) < tol


def planar_scene(seed: int, noise_px: float = 0.0, outlier_ratio: float = 0.0) -> Scene:
    """300 points on the tilted plane seen under :data:`T_PLANAR`."""
    rng = np.random.default_rng(seed)
    return make_scene(
        rng, 300, kind="planar", T_cam2_cam1=T_PLANAR, noise_px=noise_px,
        outlier_ratio=outlier_ratio,
    )  # fmt: skip

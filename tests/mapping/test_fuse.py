"""Fusing duplicated map points: hand-made exact views and rendered RGB-D keyframes."""

from __future__ import annotations

import numpy as np

from slam.geometry.lie import make_pose, so3_exp
from slam.map.keyframe import KeyFrame
from slam.map.map import Map
from slam.mapping.fuse import fuse_into
from slam.tracking.initializer import add_depth_points
from tests.map.factories import (
    BF_SMALL,
    K_SMALL,
    SCALES,
    flip_bits,
    make_frame,
    make_keyframe,
    project,
    random_descriptors,
    synthetic_frame,
)

N = 40
T1 = np.eye(4)
T2 = make_pose(so3_exp(np.array([0.0, 0.03, 0.0])), np.array([-0.15, 0.0, 0.0]))


class _Views:
    """N points seen by two keyframes at exact pixels with near-identical descriptors."""

    def __init__(self, offset2: np.ndarray | None = None, stereo: bool = False) -> None:
        rng = np.random.default_rng(0)
        self.xyz = rng.uniform([-1.0, -0.7, 2.5], [1.0, 0.7, 4.0], size=(N, 3))
        desc = random_descriptors(rng, N)
        self.m = Map()
        self.kfs: list[KeyFrame] = []
        for k, T in enumerate((T1, T2)):
            uv, z = project(K_SMALL, T, self.xyz)
            if k == 1 and offset2 is not None:
                uv = uv + offset2
            u_right = uv[:, 0] - BF_SMALL / z if stereo else None
            frame = make_frame(uv, frame_id=k, descriptors=flip_bits(desc, 5, rng),
                               u_right=u_right)
            self.kfs.append(make_keyframe(self.m, frame, T))

    def points_in(self, k: int, idx: range) -> list[int]:
        kf = self.kfs[k]
        pids = [self.m.add_point(self.xyz[i], kf, i).id for i in idx]
        self.m.update_normals_and_depths(pids)
        return pids

    def check_consistent(self) -> None:
        for pid, mp in self.m.points.items():
            for kid, idx in mp.observations.items():
                assert self.m.keyframes[kid].point_ids[idx] == pid
        for kf in self.kfs:
            for i in np.flatnonzero(kf.point_ids >= 0):
                assert self.m.points[int(kf.point_ids[i])].observations[kf.id] == i


def test_fuse_merges_duplicates_and_adds_observations() -> None:
    v = _Views()
    p1 = v.points_in(0, range(N))
    dup = v.points_in(1, range(N // 2))  # the first half are duplicates in kf2
    n = fuse_into(v.m, v.kfs[1], p1, K_SMALL, SCALES, BF_SMALL)
    assert n == N
    assert v.m.n_points() == N
    for i in range(N):
        pid = int(v.kfs[1].point_ids[i])
        assert pid == p1[i]  # equal observation counts: the projected point is kept
        assert v.m.points[pid].observations == {0: i, 1: i}
    assert not any(p in v.m.points for p in dup)
    v.check_consistent()
    # Fusing again changes nothing.
    assert fuse_into(v.m, v.kfs[1], p1, K_SMALL, SCALES, BF_SMALL) == 0


def test_fuse_keeps_the_point_with_more_observations() -> None:
    v = _Views()
    p1 = v.points_in(0, range(3))
    dup = v.points_in(1, range(3))
    extra = make_keyframe(v.m, make_frame(np.zeros((3, 2)), frame_id=2), T2)
    for i, p in enumerate(dup):
        v.m.add_observation(p, extra.id, i)
    assert fuse_into(v.m, v.kfs[1], p1, K_SMALL, SCALES, BF_SMALL) == 3
    assert sorted(v.m.points) == sorted(dup)
    for i, p in enumerate(dup):
        assert v.m.points[p].observations == {0: i, 1: i, 2: i}
        assert v.kfs[0].point_ids[i] == p


def test_fuse_rejects_keypoints_off_the_projection() -> None:
    # kf2 sees everything 2.5 px off (chi2 6.25 > 5.99) but within the 3 px search radius.
    v = _Views(offset2=np.array([2.5, 0.0]))
    p1 = v.points_in(0, range(N))
    assert fuse_into(v.m, v.kfs[1], p1, K_SMALL, SCALES, BF_SMALL) == 0
    v2 = _Views(offset2=np.array([2.0, 0.0]))
    p1 = v2.points_in(0, range(N))
    assert fuse_into(v2.m, v2.kfs[1], p1, K_SMALL, SCALES, BF_SMALL) == N


def test_fuse_checks_the_right_image_coordinate() -> None:
    """With stereo keypoints the u_right error counts too (threshold 7.8)."""
    v = _Views(offset2=np.array([1.5, 1.5]), stereo=True)  # 4.5 + ur error 2.25: 6.75 ok
    p1 = v.points_in(0, range(N))
    assert fuse_into(v.m, v.kfs[1], p1, K_SMALL, SCALES, BF_SMALL) == N
    v = _Views(offset2=np.array([1.5, 1.5]), stereo=False)
    v.kfs[1].frame.u_right[:] = v.kfs[1].frame.uv[:, 0] - 5.0  # way off the predicted ur
    p1 = v.points_in(0, range(N))
    assert fuse_into(v.m, v.kfs[1], p1, K_SMALL, SCALES, BF_SMALL) == 0


def test_fuse_on_rendered_rgbd_keyframes() -> None:
    m = Map()
    kfs = []
    for i in (3, 4):
        f = synthetic_frame("rgbd", i)
        assert f.T_cam_world is not None
        kfs.append(make_keyframe(m, f, f.T_cam_world))
        add_depth_points(m, kfs[-1], K_SMALL, max_close_depth=10.0)
    n_before = m.n_points()
    p1 = [int(p) for p in kfs[0].point_ids if p >= 0]
    n = fuse_into(m, kfs[1], p1, K_SMALL, SCALES, BF_SMALL)
    assert n > 150
    both = [p for p in m.points if len(m.points[p].observations) == 2]
    assert m.n_points() == n_before - len(both) and len(both) == n
    # Every fused pair is a true correspondence: kf1's rendered point lands on kf2's keypoint.
    f1, f2 = kfs[0].frame, kfs[1].frame
    i1 = np.array([m.points[p].observations[kfs[0].id] for p in both])
    i2 = np.array([m.points[p].observations[kfs[1].id] for p in both])
    z = f1.depth_m[i1]
    xyz_cam = np.column_stack([(f1.uv[i1] - K_SMALL[:2, 2]) / K_SMALL[0, 0] * z[:, None], z])
    xyz = xyz_cam @ kfs[0].T_world_cam[:3, :3].T + kfs[0].T_world_cam[:3, 3]
    uv2, _ = project(K_SMALL, kfs[1].T_cam_world, xyz)
    px = np.linalg.norm(uv2 - f2.uv[i2], axis=1) / SCALES[f2.octave[i2]]
    assert np.mean(px < 3.0) > 0.97

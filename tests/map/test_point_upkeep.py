"""Quantities each map point derives from its observations: mean viewing direction,
scale-invariance distances, representative descriptor; observations grouped by keyframe."""

from __future__ import annotations

import numpy as np
import pytest

from slam.map.point_upkeep import by_keyframe
from tests.map.factories import (
    SCALE_FACTOR,
    map_with_keyframes,
    random_descriptors,
    share_points,
)


def test_by_keyframe_groups_every_observation_once() -> None:
    obs_kf = np.array([7, 3, 7, 9, 3, 7], np.int64)
    groups = list(by_keyframe(obs_kf))
    assert [k for k, _ in groups] == [3, 7, 9]
    assert [sel.tolist() for _, sel in groups] == [[1, 4], [0, 2, 5], [3]]
    assert list(by_keyframe(np.zeros(0, np.int64))) == []


def test_update_descriptor_picks_the_medoid() -> None:
    m, kfs = map_with_keyframes(5)
    rng = np.random.default_rng(3)
    bits = np.unpackbits(random_descriptors(rng, 1)[0])
    variants = []
    flips = [range(0, 2), range(10, 20), range(20, 40), range(40, 70), range(70, 110)]
    for k, f in enumerate(flips):
        b = bits.copy()
        b[list(f)] ^= 1
        variants.append(np.packbits(b))
        kfs[k].frame.descriptors[0] = variants[-1]
    mp = m.add_point(np.array([0.0, 0.0, 3.0]), kfs[4], 0)
    for kf in kfs[:4]:
        m.add_observation(mp.id, kf.id, 0)
    m.update_descriptor(mp.id)
    # Sorted rows of the distance matrix: v0 [0, 12, 22, 32, 42] has the least median (22);
    # the next is v1 [0, 12, 30, 40, 50].
    np.testing.assert_array_equal(mp.descriptor, variants[0])
    m.update_descriptors([mp.id, 12345])  # unknown ids are skipped
    np.testing.assert_array_equal(mp.descriptor, variants[0])


def test_batched_normals_equal_single_updates() -> None:
    m, kfs = map_with_keyframes(3)
    pids = share_points(m, kfs, 10)
    share_points(m, kfs[1:], 5, start=20)
    m.update_normals_and_depths(list(m.points))
    batched = m.point_arrays(list(m.points))
    m2, kfs2 = map_with_keyframes(3)
    share_points(m2, kfs2, 10)
    share_points(m2, kfs2[1:], 5, start=20)
    for p in list(m2.points):
        m2.update_normal_and_depth(p)
    single = m2.point_arrays(list(m2.points))
    np.testing.assert_allclose(batched.normals, single.normals, atol=1e-12)
    np.testing.assert_allclose(batched.max_dist, single.max_dist, rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(batched.normals, axis=1), 1.0, rtol=1e-12)
    mp = m.points[pids[0]]
    ref = m.keyframes[mp.ref_kf_id]
    level = ref.frame.octave[mp.observations[ref.id]]
    assert mp.max_dist == pytest.approx(
        np.linalg.norm(mp.xyz_world - ref.center_world) * SCALE_FACTOR**level)

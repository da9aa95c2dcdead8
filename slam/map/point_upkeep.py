"""What each map point derives from its observations, for many points at once: the
mean viewing direction and the scale-invariance distances (ORB-SLAM's
``UpdateNormalAndDepth``), and the representative descriptor
(``ComputeDistinctiveDescriptors``). The map calls these with its lock held."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from slam.features.matching import distinctive_descriptor, distinctive_descriptors

if TYPE_CHECKING:
    from slam.map.map import Map


def by_keyframe(obs_kf: NDArray[np.int64]) -> Iterator[tuple[int, NDArray[np.int64]]]:
    """The observations (N,) grouped by keyframe: each keyframe id once, with the
    indices of its observations (so that a keyframe's arrays are read once a group)."""
    order = np.argsort(obs_kf, kind="stable")
    ks = obs_kf[order]
    if len(ks) == 0:
        return
    starts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]]).tolist()
    for a, b in itertools.pairwise([*starts, len(ks)]):
        yield int(ks[a]), order[a:b]


def update_normals_and_depths(m: Map, pids: Iterable[int]) -> None:
    """Each point's mean viewing direction (unit, world) from its observing keyframes'
    centres, and the distances (metres) over which its reference keypoint's scale holds."""
    ids, pos, obs_kf, _ = _observed(m, pids)
    if len(ids) == 0:
        return
    kf_ids, at = np.unique(obs_kf, return_inverse=True)
    centre = np.array([m.keyframes[k].center_world for k in kf_ids.tolist()])
    xyz = m.store.get("xyz", ids)
    v = xyz[pos] - centre[at]
    v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    acc = np.zeros((len(ids), 3))
    np.add.at(acc, pos, v)
    acc /= np.maximum(np.linalg.norm(acc, axis=1, keepdims=True), 1e-12)
    m.store.set("normal", ids, acc)
    ref_kf, ref_kp = _references(m, ids, pos, obs_kf)
    ref_level = np.empty(len(ids), np.float64)
    for k, sel in by_keyframe(ref_kf):
        ref_level[sel] = m.keyframes[k].frame.octave[ref_kp[sel]]
    dist = np.linalg.norm(xyz - centre[np.searchsorted(kf_ids, ref_kf)], axis=1)
    dmax = dist * m.scale_factor ** ref_level
    m.store.set("max_dist", ids, dmax)
    m.store.set("min_dist", ids, dmax / m.scale_factor ** (m.n_levels - 1))


def _observed(m: Map, pids: Iterable[int]) -> tuple[NDArray[np.int64], NDArray[np.int64],
                                                     NDArray[np.int64], NDArray[np.int64]]:
    """The live points of ``pids`` (in order) that have observations, (P,), and their
    observations (M,): the index of the point, the keyframe and the keypoint."""
    ids = np.fromiter(pids, np.int64) if not isinstance(pids, np.ndarray) else pids
    ids = m.store.alive_ids(ids)
    pos, obs_kf, obs_kp = m.store.observations(ids)
    return _keep(ids, pos, obs_kf, obs_kp, None)


def _keep(ids: NDArray[np.int64], pos: NDArray[np.int64], obs_kf: NDArray[np.int64],
          obs_kp: NDArray[np.int64], keep: NDArray[np.bool_] | None
          ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """The observations ``keep`` selects (all for None), and the points left with one."""
    if keep is not None:
        pos, obs_kf, obs_kp = pos[keep], obs_kf[keep], obs_kp[keep]
    has = np.bincount(pos, minlength=len(ids)) > 0
    if np.all(has):
        return ids, pos, obs_kf, obs_kp
    return ids[has], (np.cumsum(has) - 1)[pos], obs_kf, obs_kp


def _references(m: Map, ids: NDArray[np.int64], pos: NDArray[np.int64],
                obs_kf: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Each point's reference keyframe and keypoint there; a point no longer seen by
    its reference keyframe takes its first observer as the new one."""
    ref_kf, ref_kp = (m.store.get(name, ids) for name in ("ref_kf", "ref_kp"))
    for j in np.flatnonzero(ref_kp < 0).tolist():
        m.points[int(ids[j])].ref_kf_id = int(obs_kf[np.searchsorted(pos, j)])
    stale = ref_kp < 0
    if np.any(stale):
        ref_kf[stale] = m.store.get("ref_kf", ids[stale])
        ref_kp[stale] = m.store.get("ref_kp", ids[stale])
    return ref_kf, ref_kp


def update_descriptor(m: Map, pid: int) -> None:
    """The observed descriptor with the least median distance to the others."""
    mp = m.points.get(pid)
    if mp is None:
        return
    descs = [m.keyframes[k].frame.descriptors[i] for k, i in mp.observations.items()
             if k in m.keyframes and not m.keyframes[k].bad]
    if descs:
        best = descs[0] if len(descs) == 1 else distinctive_descriptor(np.array(descs))
        m.store.set("desc", pid, best)


def update_descriptors(m: Map, pids: Iterable[int]) -> None:
    """:func:`update_descriptor` for several points (unknown ids are skipped): the
    observations' descriptors are gathered per keyframe and the medoids found in one
    Numba call."""
    ids, pos, obs_kf, obs_kp = _observed(m, pids)
    if len(ids) == 0:
        return
    kf_ids, at = np.unique(obs_kf, return_inverse=True)
    good = np.array([k in m.keyframes and not m.keyframes[k].bad for k in kf_ids.tolist()])
    if not np.all(good):  # no observation should name a culled keyframe; skip any that does
        ids, pos, obs_kf, obs_kp = _keep(ids, pos, obs_kf, obs_kp, good[at])
        if len(ids) == 0:
            return
    descs = np.empty((len(obs_kf), 32), np.uint8)
    for kf_id, sel in by_keyframe(obs_kf):
        descs[sel] = m.keyframes[kf_id].frame.descriptors[obs_kp[sel]]
    offsets = np.zeros(len(ids) + 1, np.int64)
    np.cumsum(np.bincount(pos, minlength=len(ids)), out=offsets[1:])
    best = distinctive_descriptors(descs, offsets)
    m.store.set("desc", ids, descs[offsets[:-1] + best])

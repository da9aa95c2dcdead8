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
    slot: dict[int, int] = {}  # keyframe id -> row of ``centers``
    centers: list[NDArray[np.float64]] = []
    rows: list[int] = []  # per observation: the point's row ...
    obs_slots: list[int] = []  # ... and its keyframe's centre
    live: list[int] = []
    ref_slots: list[int] = []
    ref_levels: list[int] = []
    for pid in pids:
        mp = m.points.get(pid)
        if mp is None or not mp.observations:
            continue
        j = len(live)
        live.append(pid)
        for kid in mp.observations:
            c = slot.get(kid)
            if c is None:
                c = slot[kid] = len(centers)
                centers.append(m.keyframes[kid].center_world)
            rows.append(j)
            obs_slots.append(c)
        ref = mp.ref_kf_id
        if ref not in mp.observations:
            ref = mp.ref_kf_id = next(iter(mp.observations))
        ref_slots.append(slot[ref])
        ref_levels.append(int(m.keyframes[ref].frame.octave[mp.observations[ref]]))
    if not live:
        return
    ids = np.array(live, np.int64)
    xyz = m.store.get("xyz", ids)
    centre = np.array(centers)
    r = np.array(rows, np.int64)
    v = xyz[r] - centre[np.array(obs_slots, np.int64)]
    v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    acc = np.zeros((len(ids), 3))
    np.add.at(acc, r, v)
    acc /= np.maximum(np.linalg.norm(acc, axis=1, keepdims=True), 1e-12)
    m.store.set("normal", ids, acc)
    dist = np.linalg.norm(xyz - centre[np.array(ref_slots, np.int64)], axis=1)
    dmax = dist * m.scale_factor ** np.array(ref_levels, np.float64)
    m.store.set("max_dist", ids, dmax)
    m.store.set("min_dist", ids, dmax / m.scale_factor ** (m.n_levels - 1))


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
    ids: list[int] = []
    counts: list[int] = []
    obs_kf: list[int] = []
    obs_kp: list[int] = []
    for pid in pids:
        mp = m.points.get(pid)
        if mp is None:
            continue
        n = 0
        for k, i in mp.observations.items():
            kf = m.keyframes.get(k)
            if kf is not None and not kf.bad:
                obs_kf.append(k)
                obs_kp.append(i)
                n += 1
        if n:
            ids.append(pid)
            counts.append(n)
    if not ids:
        return
    kp_arr = np.array(obs_kp)
    descs = np.empty((len(kp_arr), 32), np.uint8)
    for kf_id, sel in by_keyframe(np.array(obs_kf, np.int64)):
        descs[sel] = m.keyframes[kf_id].frame.descriptors[kp_arr[sel]]
    offsets = np.zeros(len(ids) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    best = distinctive_descriptors(descs, offsets)
    m.store.set("desc", np.array(ids, np.int64), descs[offsets[:-1] + best])

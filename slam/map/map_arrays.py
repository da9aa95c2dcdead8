"""The map as named bulk arrays and back (the payload's ``arrays`` and ``scalars``).

:func:`encode_map` copies a :class:`Map` into the arrays of :data:`SPEC` (the
caller holds the map lock); :func:`decode_map` rebuilds the map from arrays that
:mod:`slam.map.map_checks` has validated. ``docs/map_format.md`` describes every
array.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import numpy as np
from numpy.typing import NDArray

from slam.map.frame import Frame
from slam.map.image_codec import IMAGE_OFFSETS, Images, image_spec
from slam.map.keyframe import KeyFrame
from slam.map.map import Map
from slam.map.map_point import MapPoint
from slam.map.point_store import PointStore
from slam.map.point_upkeep import by_keyframe

log = logging.getLogger(__name__)

Arrays = dict[str, NDArray[Any]]
# name -> (dtype or None for any numeric, trailing shape, length group). A group is
# "K" (keyframes), "P" (points), "K+1"/"P+1" (offsets) or the name of a CSR
# group whose length is the last entry of its offsets array (CSR_OFFSETS).
SPEC: dict[str, tuple[str | None, tuple[int, ...], str]] = {
    "kf.id": ("<i8", (), "K"), "kf.frame_id": ("<i8", (), "K"),
    "kf.timestamp": ("<f8", (), "K"), "kf.size": ("<i8", (2,), "K"),
    "kf.bad": ("|b1", (), "K"), "kf.parent_id": ("<i8", (), "K"),
    "kf.T_cam_world": ("<f8", (4, 4), "K"),
    "kf.has_T_cam_parent": ("|b1", (), "K"), "kf.T_cam_parent": ("<f8", (4, 4), "K"),
    "kf.has_frame_T_cam_world": ("|b1", (), "K"),
    "kf.frame_T_cam_world": ("<f8", (4, 4), "K"),
    "kf.kp_offsets": ("<i8", (), "K+1"), "kf.covis_offsets": ("<i8", (), "K+1"),
    "kf.ordered_offsets": ("<i8", (), "K+1"), "kf.children_offsets": ("<i8", (), "K+1"),
    "kf.loop_offsets": ("<i8", (), "K+1"),
    "kp.uv": ("<f8", (2,), "kp"), "kp.octave": ("<i4", (), "kp"),
    "kp.descriptors": ("|u1", (32,), "kp"), "kp.depth_m": ("<f8", (), "kp"),
    "kp.u_right": ("<f8", (), "kp"), "kp.inv_sigma2": ("<f8", (), "kp"),
    "kp.point_id": ("<i8", (), "kp"), "kp.outlier": ("|b1", (), "kp"),
    "covis.kf_id": ("<i8", (), "covis"), "covis.weight": ("<i8", (), "covis"),
    "ordered.kf_id": ("<i8", (), "ordered"), "children.kf_id": ("<i8", (), "children"),
    "loop.kf_id": ("<i8", (), "loop"),
    "pt.id": ("<i8", (), "P"), "pt.xyz_world": ("<f8", (3,), "P"),
    "pt.descriptor": ("|u1", (32,), "P"), "pt.normal": ("<f8", (3,), "P"),
    "pt.min_dist": ("<f8", (), "P"), "pt.max_dist": ("<f8", (), "P"),
    "pt.n_visible": ("<i8", (), "P"), "pt.n_found": ("<i8", (), "P"),
    "pt.ref_kf_id": ("<i8", (), "P"), "pt.first_kf_id": ("<i8", (), "P"),
    "pt.bad": ("|b1", (), "P"), "pt.replaced_by": ("<i8", (), "P"),
    "pt.obs_offsets": ("<i8", (), "P+1"),
    "obs.kf_id": ("<i8", (), "obs"), "obs.kp_idx": ("<i8", (), "obs"),
}
CSR_OFFSETS = {"kp": "kf.kp_offsets", "covis": "kf.covis_offsets",
               "ordered": "kf.ordered_offsets", "children": "kf.children_offsets",
               "loop": "kf.loop_offsets", "obs": "pt.obs_offsets", **IMAGE_OFFSETS}
SPEC |= image_spec()  # keyframe images (slam.map.image_codec)
SCALARS = ("next_kf_id", "next_point_id", "origin_kf_id", "map_version", "scale_factor",
           "n_levels")


def encode_map(m: Map) -> tuple[Arrays, dict[str, Any]]:
    """Copy the map into bulk arrays (see SPEC) and scalars; the caller holds the lock.

    Keypoint ``point_ids`` naming no live point (left by tracking when a point was
    erased before local mapping took the keyframe) are stored as -1: every reader
    treats the two alike.
    """
    arrays = {**_keyframe_arrays(list(m.keyframes.values())),
              **_point_arrays(list(m.points.values()), m.store)}
    pid = arrays["kp.point_id"]
    stale = (pid >= 0) & ~np.isin(pid, arrays["pt.id"])
    if stale.any():
        log.debug("%d keypoints name erased map points; stored as -1", int(stale.sum()))
        arrays["kp.point_id"] = np.where(stale, -1, pid)
    next_kf_id, next_point_id = m.id_counters()
    scalars = {"next_kf_id": next_kf_id, "next_point_id": next_point_id,
               "origin_kf_id": int(m.origin_kf_id), "map_version": int(m.version),
               "scale_factor": float(m.scale_factor), "n_levels": int(m.n_levels)}
    return arrays, scalars


def _csr(lists: list[list[int]]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Offsets (len+1,) and the concatenated int64 values of a list of int lists."""
    offsets = np.zeros(len(lists) + 1, np.int64)
    np.cumsum([len(x) for x in lists], out=offsets[1:])
    flat = np.fromiter(itertools.chain.from_iterable(lists), np.int64, int(offsets[-1]))
    return offsets, flat


def _cat(parts: list[Any], dtype: Any, tail: tuple[int, ...] = ()) -> NDArray[Any]:
    """Concatenate per-keyframe arrays (each reshaped to (-1, *tail)) as ``dtype``."""
    return np.concatenate([np.zeros((0, *tail), dtype),
                           *(np.asarray(p, dtype).reshape(-1, *tail) for p in parts)])


def _poses(poses: list[NDArray[np.float64] | None]) -> tuple[NDArray[Any], NDArray[Any]]:
    """A (K,) 'present' mask and (K, 4, 4) poses (zeros where absent)."""
    has = np.array([p is not None for p in poses], bool)
    out = np.zeros((len(poses), 4, 4))
    for i, p in enumerate(poses):
        if p is not None:
            out[i] = p
    return has, out


def _keyframe_arrays(kfs: list[KeyFrame]) -> Arrays:
    frames = [kf.frame for kf in kfs]
    a: Arrays = {
        "kf.id": np.array([kf.id for kf in kfs], np.int64),
        "kf.frame_id": np.array([f.id for f in frames], np.int64),
        "kf.timestamp": np.array([f.timestamp for f in frames], np.float64),
        "kf.size": np.array([(f.width, f.height) for f in frames], np.int64).reshape(-1, 2),
        "kf.bad": np.array([kf.bad for kf in kfs], bool),
        "kf.parent_id": np.array([kf.parent_id for kf in kfs], np.int64),
        "kf.T_cam_world": _poses([kf.T_cam_world for kf in kfs])[1],
    }
    a["kf.has_T_cam_parent"], a["kf.T_cam_parent"] = _poses([kf.T_cam_parent for kf in kfs])
    a["kf.has_frame_T_cam_world"], a["kf.frame_T_cam_world"] = _poses(
        [f.T_cam_world for f in frames])
    a["kf.kp_offsets"] = np.zeros(len(kfs) + 1, np.int64)
    np.cumsum([len(f) for f in frames], out=a["kf.kp_offsets"][1:])
    for name, attr, dtype, tail in (
        ("kp.uv", "uv", np.float64, (2,)), ("kp.octave", "octave", np.int32, ()),
        ("kp.descriptors", "descriptors", np.uint8, (32,)),
        ("kp.depth_m", "depth_m", np.float64, ()), ("kp.u_right", "u_right", np.float64, ()),
        ("kp.inv_sigma2", "inv_sigma2", np.float64, ()),
        ("kp.point_id", "point_ids", np.int64, ()), ("kp.outlier", "outlier", bool, ()),
    ):
        a[name] = _cat([getattr(f, attr) for f in frames], dtype, tail)
        if len(a[name]) != a["kf.kp_offsets"][-1]:
            raise ValueError(f"a keyframe's Frame.{attr} does not have one row per keypoint")
    a["kf.covis_offsets"], a["covis.kf_id"] = _csr([list(kf.covisible) for kf in kfs])
    a["covis.weight"] = _csr([list(kf.covisible.values()) for kf in kfs])[1]
    a["kf.ordered_offsets"], a["ordered.kf_id"] = _csr([kf.ordered_covisible for kf in kfs])
    a["kf.children_offsets"], a["children.kf_id"] = _csr([sorted(kf.children) for kf in kfs])
    a["kf.loop_offsets"], a["loop.kf_id"] = _csr([sorted(kf.loop_edges) for kf in kfs])
    return a


def _point_arrays(pts: list[MapPoint], store: PointStore) -> Arrays:
    ids = np.array([mp.id for mp in pts], np.int64)
    obs_offsets, obs_kf = _csr([list(mp.observations) for mp in pts])
    return {
        "pt.id": ids, "pt.xyz_world": store.get("xyz", ids).astype(np.float64),
        "pt.descriptor": store.get("desc", ids).astype(np.uint8),
        "pt.normal": store.get("normal", ids).astype(np.float64),
        "pt.min_dist": store.get("min_dist", ids).astype(np.float64),
        "pt.max_dist": store.get("max_dist", ids).astype(np.float64),
        "pt.n_visible": store.get("n_visible", ids).astype(np.int64),
        "pt.n_found": store.get("n_found", ids).astype(np.int64),
        "pt.ref_kf_id": np.array([mp.ref_kf_id for mp in pts], np.int64),
        "pt.first_kf_id": np.array([mp.first_kf_id for mp in pts], np.int64),
        "pt.bad": np.array([mp.bad for mp in pts], bool),
        "pt.replaced_by": np.array([mp.replaced_by for mp in pts], np.int64),
        "pt.obs_offsets": obs_offsets, "obs.kf_id": obs_kf,
        "obs.kp_idx": _csr([list(mp.observations.values()) for mp in pts])[1],
    }


def decode_map(a: Arrays, s: dict[str, Any], images: Images) -> Map:
    """Rebuild a :class:`Map` from arrays and scalars that :mod:`slam.map.map_checks`
    has validated, and the keyframes' decoded ``images``."""
    m = Map.restoring(float(s["scale_factor"]), int(s["n_levels"]), next_kf_id=int(
        s["next_kf_id"]), next_point_id=int(s["next_point_id"]),
        origin_kf_id=int(s["origin_kf_id"]), version=int(s["map_version"]))
    for kf in _rebuild_keyframes(a, images):
        m.keyframes[kf.id] = kf
    _rebuild_points(m, a)
    return m


def _slices(offsets: NDArray[np.int64]) -> list[slice]:
    bounds = offsets.tolist()
    return [slice(lo, hi) for lo, hi in itertools.pairwise(bounds)]


def _rebuild_keyframes(a: Arrays, images: Images) -> list[KeyFrame]:
    kp, cov, ordd = _slices(a["kf.kp_offsets"]), _slices(a["kf.covis_offsets"]), _slices(
        a["kf.ordered_offsets"])
    child, loop = _slices(a["kf.children_offsets"]), _slices(a["kf.loop_offsets"])
    cov_id, cov_w = a["covis.kf_id"].tolist(), a["covis.weight"].tolist()
    ord_id, child_id, loop_id = (a[n].tolist() for n in ("ordered.kf_id", "children.kf_id",
                                                         "loop.kf_id"))
    ids, frame_ids, stamps, sizes, bad, parent = (a[n].tolist() for n in (
        "kf.id", "kf.frame_id", "kf.timestamp", "kf.size", "kf.bad", "kf.parent_id"))
    kfs = []
    for i, kf_id in enumerate(ids):
        k = kp[i]
        frame = Frame(
            id=frame_ids[i], timestamp=stamps[i], uv=a["kp.uv"][k].copy(),
            octave=a["kp.octave"][k].copy(), descriptors=a["kp.descriptors"][k].copy(),
            depth_m=a["kp.depth_m"][k].copy(), u_right=a["kp.u_right"][k].copy(),
            inv_sigma2=a["kp.inv_sigma2"][k].copy(), width=sizes[i][0], height=sizes[i][1],
            color=images["color"][i], T_cam_world=_pose_or_none(a, "kf.frame_T_cam_world", i),
            point_ids=a["kp.point_id"][k].copy(), outlier=a["kp.outlier"][k].copy(),
            image=images["image"][i], right_image=images["right"][i],
            depth_image=images["depth"][i],
        )
        kfs.append(KeyFrame(
            id=kf_id, frame=frame, T_cam_world=a["kf.T_cam_world"][i].copy(),
            covisible=dict(zip(cov_id[cov[i]], cov_w[cov[i]])),
            ordered_covisible=ord_id[ordd[i]], parent_id=parent[i],
            children=set(child_id[child[i]]), bad=bad[i],
            T_cam_parent=_pose_or_none(a, "kf.T_cam_parent", i),
            loop_edges=set(loop_id[loop[i]]),
        ))
    return kfs


def _pose_or_none(a: Arrays, name: str, i: int) -> NDArray[np.float64] | None:
    has = a[name.replace("kf.", "kf.has_", 1)]
    return a[name][i].copy() if has[i] else None


def _rebuild_points(m: Map, a: Arrays) -> None:
    """Fill the store in bulk, then create the map points (in their saved order)."""
    ids = a["pt.id"]
    st = m.store
    st.load(ids, ~a["pt.bad"], {
        "xyz": a["pt.xyz_world"], "desc": a["pt.descriptor"], "normal": a["pt.normal"],
        "min_dist": a["pt.min_dist"], "max_dist": a["pt.max_dist"],
        "n_visible": a["pt.n_visible"], "n_found": a["pt.n_found"]})
    obs = _slices(a["pt.obs_offsets"])
    obs_kf, obs_idx = a["obs.kf_id"].tolist(), a["obs.kp_idx"].tolist()
    ref, first, bad, repl = (a[n].tolist() for n in ("pt.ref_kf_id", "pt.first_kf_id",
                                                     "pt.bad", "pt.replaced_by"))
    for j, pid in enumerate(ids.tolist()):
        mp = MapPoint.existing(st, pid, ref_kf_id=ref[j], first_kf_id=first[j])
        mp.observations = dict(zip(obs_kf[obs[j]], obs_idx[obs[j]]))
        mp.sync_store()
        mp.bad, mp.replaced_by = bad[j], repl[j]
        m.points[pid] = mp
    counts = np.diff(a["pt.obs_offsets"])
    st.load_observations(ids, counts, a["obs.kf_id"], a["obs.kp_idx"])
    _count_levels(m, np.repeat(ids, counts), a["obs.kf_id"], a["obs.kp_idx"])


def _count_levels(m: Map, obs_pid: NDArray[np.int64], obs_kf: NDArray[np.int64],
                  obs_kp: NDArray[np.int64]) -> None:
    """The store's observations by level, from the observations (N,) of the loaded
    points: a keyframe's keypoints at a time."""
    for kf_id, sel in by_keyframe(obs_kf):
        kf = m.keyframes.get(kf_id)
        if kf is not None:
            m.store.count_levels(obs_pid[sel], kf.frame.octave[obs_kp[sel]], 1)

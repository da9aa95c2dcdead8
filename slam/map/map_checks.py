"""Validation of a map file's arrays and scalars before anything is built from them.

A map file is untrusted input (``docs/map_format.md``, "Validation on load"). In
order, before any image is decoded or any map object allocated:

1. :func:`check_structure`: every array of :data:`~slam.map.map_arrays.SPEC`
   present with its dtype and shape, offsets arrays well formed.
2. :func:`check_scalars`: the scalars typed and within their ranges.
3. :func:`check_values`: every float finite and within range, every pose a rigid
   transform, every count, octave and id within range.
4. :func:`check_references`: ids unique and below the counters, every reference
   resolved, culled keyframes' parent chains free of cycles.
5. :func:`~slam.map.image_codec.check_image_arrays`: images of exactly the camera's
   size, and their decoded bytes within the budget the keyframe count allows.

Each check raises ValueError naming the field; the caller turns it into a
:class:`~slam.errors.MapFileError`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from slam.camera.pinhole import Calibration
from slam.map.image_codec import MAX_DEPTH_SCALE, MIN_DEPTH_SCALE, check_image_arrays
from slam.map.map_arrays import CSR_OFFSETS, SCALARS, SPEC, Arrays
from slam.map.map_header import MAX_COUNT, MAX_PIXEL_COORD, integer, real

MAX_LEVELS = 32  # ORB pyramid levels (n_levels in 1..32)
MIN_SCALE_FACTOR, MAX_SCALE_FACTOR = 1.0, 2.0  # pyramid scale factor in (1, 2]
MAX_COORD_M = 1e6  # metres: positions, translations, depths, scale distances
MAX_TIMESTAMP_S = 1e12  # seconds: |keyframe timestamps|
ROTATION_TOL = 1e-5  # |R R^T - I| and |det R - 1| of a pose's rotation
MAX_INV_SIGMA2 = 1e6  # a keypoint's 1 / scale^2 is in (0, MAX_INV_SIGMA2]


def check_structure(a: Arrays, s: dict[str, Any]) -> None:
    """Every array present with its dtype, shape and length; offsets well formed."""
    missing = [n for n in SPEC if n not in a] + [n for n in SCALARS if n not in s]
    if missing:
        raise ValueError(f"missing fields {missing}")
    lengths = {"K": len(a["kf.id"]), "P": len(a["pt.id"])}
    lengths["K+1"], lengths["P+1"] = lengths["K"] + 1, lengths["P"] + 1
    for name, (dtype, tail, group) in sorted(SPEC.items(), key=lambda kv: kv[1][2] in
                                             CSR_OFFSETS):
        arr = a[name]
        if dtype is not None and arr.dtype.str != dtype:
            raise ValueError(f"{name} has dtype {arr.dtype.str}, expected {dtype}")
        if group in CSR_OFFSETS and group not in lengths:
            off = a[CSR_OFFSETS[group]]
            if off[0] != 0 or np.any(np.diff(off) < 0):
                raise ValueError(f"{CSR_OFFSETS[group]} is not a valid offsets array")
            lengths[group] = int(off[-1])
        if arr.shape != (lengths[group], *tail):
            raise ValueError(f"{name} has shape {arr.shape}, expected {(lengths[group], *tail)}")


def check_scalars(s: dict[str, Any]) -> None:
    """Counters, origin, version and pyramid parameters typed and within range."""
    next_kf = integer(s, "next_kf_id", 0, MAX_COUNT)
    integer(s, "next_point_id", 0, MAX_COUNT)
    integer(s, "origin_kf_id", -1, max(next_kf - 1, -1))
    integer(s, "map_version", 0, MAX_COUNT)
    real(s, "scale_factor", MIN_SCALE_FACTOR, MAX_SCALE_FACTOR, open_lo=True)
    integer(s, "n_levels", 1, MAX_LEVELS)


def _in_range(a: Arrays, name: str, lo: float, hi: float,
              rows: NDArray[np.bool_] | None = None) -> None:
    """Every value of ``a[name]`` (the ``rows`` selected) finite and in [lo, hi]."""
    v = a[name] if rows is None else a[name][rows]
    ok = np.isfinite(v) & (v >= lo) & (v <= hi) if v.dtype.kind == "f" else (v >= lo) & (
        v <= hi)
    if not np.all(ok):
        raise ValueError(f"{name} holds {v[~ok][0].item()!r} outside [{lo:g}, {hi:g}]")


def check_poses(name: str, T: NDArray[np.float64]) -> None:
    """``T`` (N, 4, 4): finite rigid transforms (rotation orthonormal within
    :data:`ROTATION_TOL`, |translation| <= :data:`MAX_COORD_M`, last row 0 0 0 1)."""
    if not np.all(np.isfinite(T)):
        raise ValueError(f"{name} holds a pose that is not finite")
    if len(T) == 0:
        return
    R = T[:, :3, :3]
    ortho = np.abs(np.einsum("nij,nkj->nik", R, R) - np.eye(3)).max(axis=(1, 2))
    det = np.linalg.det(R)
    bad = (ortho > ROTATION_TOL) | (np.abs(det - 1.0) > ROTATION_TOL)
    bad |= np.abs(T[:, :3, 3]).max(axis=1) > MAX_COORD_M
    bad |= np.abs(T[:, 3] - [0.0, 0.0, 0.0, 1.0]).max(axis=1) > 0.0
    if bad.any():
        raise ValueError(f"{name}[{int(np.flatnonzero(bad)[0])}] is not a rigid transform")


def check_values(a: Arrays, s: dict[str, Any], calibration: Calibration) -> None:
    """Floats finite and in range, poses rigid, counts and octaves in range; keyframes
    of the calibration's image size."""
    cam = calibration.camera
    check_poses("kf.T_cam_world", a["kf.T_cam_world"])
    check_poses("kf.T_cam_parent", a["kf.T_cam_parent"][a["kf.has_T_cam_parent"]])
    check_poses("kf.frame_T_cam_world",
                a["kf.frame_T_cam_world"][a["kf.has_frame_T_cam_world"]])
    if np.any(a["kf.size"] != [cam.width, cam.height]):
        raise ValueError(f"kf.size differs from the camera's {cam.width}x{cam.height}")
    _in_range(a, "kf.frame_id", 0, MAX_COUNT)
    _in_range(a, "kf.timestamp", -MAX_TIMESTAMP_S, MAX_TIMESTAMP_S)
    for name in ("kp.uv", "kp.u_right"):
        _in_range(a, name, -MAX_PIXEL_COORD, MAX_PIXEL_COORD)
    _in_range(a, "kp.octave", 0, int(s["n_levels"]) - 1)
    _in_range(a, "kp.depth_m", -MAX_COORD_M, MAX_COORD_M)
    _in_range(a, "kp.inv_sigma2", np.finfo(np.float64).tiny, MAX_INV_SIGMA2)
    _in_range(a, "kp.point_id", -1, MAX_COUNT)
    _in_range(a, "covis.weight", 0, MAX_COUNT)
    _in_range(a, "pt.xyz_world", -MAX_COORD_M, MAX_COORD_M)
    _in_range(a, "pt.normal", -1.0 - ROTATION_TOL, 1.0 + ROTATION_TOL)
    for name in ("pt.min_dist", "pt.max_dist"):
        _in_range(a, name, 0.0, MAX_COORD_M)
    for name in ("pt.n_visible", "pt.n_found"):
        _in_range(a, name, 0, MAX_COUNT)
    for name in ("pt.ref_kf_id", "pt.first_kf_id"):
        _in_range(a, name, -1, int(s["next_kf_id"]) - 1)
    _in_range(a, "pt.replaced_by", -1, int(s["next_point_id"]) - 1)
    _in_range(a, "kf.depth_scale", 0.0, MAX_DEPTH_SCALE)
    _in_range(a, "kf.depth_scale", MIN_DEPTH_SCALE, MAX_DEPTH_SCALE,
              rows=a["kf.depth_ndim"] >= 0)
    check_image_arrays(a, cam.width, cam.height)


def check_references(a: Arrays, s: dict[str, Any]) -> None:
    """Ids unique and below the counters; every reference names an existing item;
    parent chains of culled keyframes end."""
    kf_ids, pt_ids = a["kf.id"], a["pt.id"]
    for what, ids, nxt in (("keyframe", kf_ids, s["next_kf_id"]),
                           ("point", pt_ids, s["next_point_id"])):
        if len(np.unique(ids)) != len(ids) or np.any(ids < 0) or np.any(ids >= nxt):
            raise ValueError(f"{what} ids are duplicated or outside [0, {nxt})")
    for name in ("covis.kf_id", "ordered.kf_id", "children.kf_id", "loop.kf_id", "obs.kf_id"):
        bad = ~np.isin(a[name], kf_ids)
        if bad.any():
            raise ValueError(f"{name} names missing keyframe {int(a[name][bad][0])}")
    for name, ids, value in (("kf.parent_id", kf_ids, a["kf.parent_id"]),
                             ("origin_kf_id", kf_ids, np.array([s["origin_kf_id"]])),
                             ("kp.point_id", pt_ids, a["kp.point_id"])):
        bad = (value != -1) & ~np.isin(value, ids)
        if bad.any():
            raise ValueError(f"{name} names missing item {int(value[bad][0])}")
    _check_observations(a)
    _check_parent_chains(a)


def _check_observations(a: Arrays) -> None:
    kf_ids = a["kf.id"]
    order = np.argsort(kf_ids)
    pos = order[np.searchsorted(kf_ids[order], a["obs.kf_id"])] if len(kf_ids) else order
    n_kp = np.diff(a["kf.kp_offsets"])[pos]
    kp_idx = a["obs.kp_idx"]
    bad = (kp_idx < 0) | (kp_idx >= n_kp)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"an observation names keypoint {int(kp_idx[i])} of keyframe "
                         f"{int(a['obs.kf_id'][i])}, which has {int(n_kp[i])}")
    owner = np.repeat(np.arange(len(a["pt.id"])), np.diff(a["pt.obs_offsets"]))
    pairs = np.stack([owner, a["obs.kf_id"]], axis=1)
    if len(np.unique(pairs, axis=0)) != len(pairs):
        raise ValueError("a point is observed twice by one keyframe")


def _check_parent_chains(a: Arrays) -> None:
    """A culled keyframe's pose follows its parents (``Map.keyframe_pose``): each such
    chain must reach a keyframe that is not culled (or has no relative pose) without
    a cycle."""
    ids = a["kf.id"].tolist()
    parent = dict(zip(ids, a["kf.parent_id"].tolist()))
    follows = {k for k, bad, has in zip(ids, a["kf.bad"].tolist(),
                                        a["kf.has_T_cam_parent"].tolist()) if bad and has}
    done: set[int] = set()
    for start in follows:
        path: set[int] = set()
        k = start
        while k in follows and k not in done:
            if k in path:
                raise ValueError(f"keyframe {start}'s parent chain is a cycle")
            path.add(k)
            k = parent[k]
            if k == -1:
                raise ValueError(f"culled keyframe {start} has a relative pose but no parent")
        done |= path

"""Map files: exact round trips, clear errors on damaged or foreign files, atomic saves."""

from __future__ import annotations

import hashlib
import logging
import struct
import threading
import time
import zlib
from dataclasses import fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest

import slam
from slam.camera.pinhole import Calibration, PinholeCamera
from slam.errors import MapFileError
from slam.geometry.lie import make_pose, se3_inv, so3_exp
from slam.map import persistence
from slam.map.frame import Frame
from slam.map.keyframe import KeyFrame
from slam.map.map import Map
from slam.map.map_point import MapPoint
from slam.map.persistence import (
    FORMAT_VERSION,
    MAGIC,
    load_map,
    read_map_info,
    save_map,
)
from tests.map.factories import N_LEVELS, SCALE_FACTOR, make_frame, make_keyframe
from tests.map.map_edit import MapParts, edit

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[2]
CALIB = Calibration(
    PinholeCamera(250.0, 251.0, 159.5, 119.5, 320, 240, dist=(0.01, -0.002, 5e-4, 3e-4, 0.0)),
    fps=30.0, bf=25.0, depth_factor=5000.0,
)
CALIB_VGA = replace(CALIB, camera=replace(CALIB.camera, width=640, height=480))
EXTRA = {"loop_edges": [[0, 11]], "note": "two loops", 3: 1.5, "blob": b"\x00\x01",
         "nested": {"a": [1, 2.5, None, True]}}


# --- map builders (also used by the SIGKILL child process) ------------------------------
def build_map(n_kf: int, n_points: int, n_kp: int, seed: int = 0) -> Map:
    """A map of ``n_kf`` keyframes (``n_kp`` keypoints each) on a line, ``n_points`` points
    each seen by up to five consecutive keyframes, covisibility and spanning tree linked."""
    rng = np.random.default_rng(seed)
    m = Map(SCALE_FACTOR, N_LEVELS)
    kfs = []
    for k in range(n_kf):
        uv = rng.uniform([0, 0], [320, 240], size=(n_kp, 2))
        octave = rng.integers(0, N_LEVELS, n_kp).astype(np.int32)
        depth = np.where(rng.random(n_kp) < 0.7, rng.uniform(1, 5, n_kp), -1.0)
        u_right = np.where(depth > 0, uv[:, 0] - 25.0 / np.maximum(depth, 1e-9), -1.0)
        R = so3_exp(rng.normal(0, 0.05, 3))
        T = np.asarray(se3_inv(make_pose(R, np.array([0.05 * k, 0.01 * k, 0.0]))))
        frame = make_frame(uv, frame_id=3 * k, octave=octave, depth_m=depth, u_right=u_right,
                           rng=rng)
        frame.timestamp = 0.1 * k + 1e9
        kfs.append(make_keyframe(m, frame, T))
    per = max(n_points // n_kf, 1)
    assert 5 * per <= n_kp
    for j in range(n_points):
        b = min(j // per, n_kf - 1)
        xyz = np.array([0.05 * b, 0, 0]) + rng.uniform([-1, -1, 2], [1, 1, 6])
        mp = m.add_point(xyz, kfs[b], j % per)
        for k in range(b + 1, min(b + 5, n_kf)):
            m.add_observation(mp.id, kfs[k].id, j % per + per * (k - b))
    m.update_normals_and_depths(list(m.points))
    for kf in kfs:
        m.update_connections(kf.id)
    return m


def smooth_image(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """A uint8 image of ``shape`` that JPEG keeps within a few grey levels."""
    yy, xx = np.mgrid[0: shape[0], 0: shape[1]].astype(np.float64)
    chans = [20 + seed % 7 + 100 * xx / shape[1] + 30 * (c + 1) * yy / shape[0]
             for c in range(3)]
    img = np.stack(chans, -1) if len(shape) == 3 else chans[0]
    return img.astype(np.uint8)


def depth_image(shape: tuple[int, int], seed: int) -> np.ndarray:
    """(H, W) float32 metres in TUM's 0.2 mm steps, with holes (0)."""
    rng = np.random.default_rng(seed)
    raw = rng.integers(2500, 20000, shape).astype(np.uint16)
    raw[rng.random(shape) < 0.1] = 0
    return (raw.astype(np.float32) / np.float32(5000.0)).astype(np.float32)


def rich_map() -> Map:
    """A small map with every kind of state: culled keyframes, fused and erased points,
    a loop edge, colour, grey, right and depth images, a frame without pose, outliers,
    visibility counts."""
    m = build_map(12, 720, 400)
    rng = np.random.default_rng(1)
    m.erase_keyframe(4)
    m.erase_keyframe(7)
    pids = list(m.points)
    m.replace_point(pids[10], pids[11])
    m.erase_point(pids[20])
    m.add_loop_edge(0, 11)
    m.keyframes[1].frame.color = smooth_image((240, 320, 3), 1)
    m.keyframes[2].frame.color = smooth_image((240, 320), 2)
    m.keyframes[1].frame.depth_image = depth_image((240, 320), 1)
    m.keyframes[5].frame.depth_image = depth_image((240, 320), 5)
    m.keyframes[6].frame.image = rng.integers(0, 256, (240, 320), dtype=np.uint8)
    m.keyframes[6].frame.right_image = rng.integers(0, 256, (240, 320), dtype=np.uint8)
    m.keyframes[8].frame.color = rng.integers(0, 256, (240, 320, 1), dtype=np.uint8)  # raw
    m.keyframes[3].frame.T_cam_world = None
    for kf in m.keyframes.values():
        kf.frame.outlier[:] = rng.random(len(kf.frame)) < 0.1
    live = np.array(list(m.points), np.int64)
    m.count_visible(live[::3])
    m.count_visible(live[::5])
    m.count_found(live[::7])
    return m


# --- comparison ---------------------------------------------------------------------------
KEYFRAME_FIELDS = {"id", "frame", "T_cam_world", "covisible", "ordered_covisible", "parent_id",
                   "children", "bad", "T_cam_parent", "loop_edges"}
FRAME_FIELDS = {"id", "timestamp", "uv", "octave", "descriptors", "depth_m", "u_right",
                "inv_sigma2", "width", "height", "color", "T_cam_world", "point_ids", "outlier",
                "image", "right_image", "depth_image", "_grid"}
POINT_SLOTS = {"_ref", "_s", "bad", "id", "observations", "replaced_by"}
# ref_kf_id lives in the store too (its keypoint there, ref_kp, is derived on load).
POINT_STORE_FIELDS = ("xyz_world", "descriptor", "normal", "min_dist", "max_dist", "n_visible",
                      "n_found", "ref_kf_id", "first_kf_id")
JPEG_ATOL = 4  # colour is JPEG (quality 95) in map files: smooth test images stay this close
MAP_ATTRS = {"lock", "keyframes", "points", "store", "scale_factor", "n_levels", "_next_kf",
             "_next_pt", "origin_kf_id", "version"}


def _assert_same(a: Any, b: Any, what: str, atol: int = 0) -> None:
    """Exact equality (``atol`` grey levels for arrays), array dtypes and dict order
    included."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray), what
        assert a.dtype == b.dtype and a.shape == b.shape, (what, a.dtype, b.dtype)
        diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
        assert np.array_equal(a, b) or diff.max() <= atol, (what, diff.max())
    elif isinstance(a, dict):
        assert list(a.items()) == list(b.items()), what
    else:
        assert type(a) is type(b) and a == b, (what, a, b)


def assert_maps_equal(a: Map, b: Map, color_atol: int = JPEG_ATOL) -> None:
    """Equal maps; colour images (JPEG in the file) within ``color_atol`` grey levels."""
    assert (a._next_kf, a._next_pt, a.origin_kf_id, a.version) == (
        b._next_kf, b._next_pt, b.origin_kf_id, b.version)
    assert (a.scale_factor, a.n_levels) == (b.scale_factor, b.n_levels)
    assert list(a.keyframes) == list(b.keyframes)
    for kid, ka in a.keyframes.items():
        kb = b.keyframes[kid]
        for f in fields(KeyFrame):
            if f.name != "frame":
                _assert_same(getattr(ka, f.name), getattr(kb, f.name), f"kf {kid} {f.name}")
        for f in fields(Frame):
            if f.name != "_grid":
                _assert_same(getattr(ka.frame, f.name), getattr(kb.frame, f.name),
                             f"kf {kid} frame.{f.name}", color_atol if f.name == "color" else 0)
    assert list(a.points) == list(b.points)
    for pid, pa in a.points.items():
        pb = b.points[pid]
        assert pb._s is b.store
        for name in sorted(POINT_SLOTS - {"_s"}) + list(POINT_STORE_FIELDS):
            _assert_same(getattr(pa, name), getattr(pb, name), f"point {pid} {name}")
        ids = np.array([pid])
        assert a.store.alive_mask(ids) == b.store.alive_mask(ids)
    assert np.array_equal(b.store.live_ids(), a.store.live_ids())


# --- round trips --------------------------------------------------------------------------
def test_the_format_covers_every_field_of_the_map_classes() -> None:
    """A new field in these classes must be added to the map format and to this test."""
    assert {f.name for f in fields(KeyFrame)} == KEYFRAME_FIELDS
    assert {f.name for f in fields(Frame)} == FRAME_FIELDS
    assert set(MapPoint.__slots__) == POINT_SLOTS
    # The culled-keyframe registry is rebuilt on load (Map.release_culled) and the change
    # log starts anew: neither is stored.
    assert set(vars(Map())) == MAP_ATTRS | {"culled", "changes"}


def test_round_trip_restores_every_field(tmp_path: Path) -> None:
    m = rich_map()
    path = tmp_path / "run.map"
    info = save_map(path, m, CALIB, "rgbd", extra=EXTRA)
    loaded = load_map(path, calibration=CALIB, sensor="rgbd")
    assert_maps_equal(m, loaded.map)
    assert loaded.calibration == CALIB and loaded.sensor == "rgbd"
    assert loaded.extra == {**EXTRA, "loop_edges": [[0, 11]]}
    assert loaded.info == info == read_map_info(path)
    assert info.n_keyframes == 12 and info.n_bad_keyframes == 2
    # Culled keyframes keep their pose chain only: no keypoints (slam.map.frame.released).
    assert info.n_points == len(m.points) and info.n_keypoints == 10 * 400
    assert info.n_observations == sum(len(p.observations) for p in m.points.values())
    assert info.format_version == FORMAT_VERSION and info.package_version == slam.__version__
    assert abs((datetime.now(UTC) - info.created).total_seconds()) < 60
    assert info.camera == CALIB.camera and info.payload_bytes + 100 < path.stat().st_size


def test_the_file_follows_the_documented_layout(tmp_path: Path) -> None:
    """docs/map_format.md: prefix, CRC-32 of the msgpack header, SHA-256 of a plain msgpack
    payload whose arrays are raw little-endian bytes."""
    m = rich_map()
    save_map(tmp_path / "m.map", m, CALIB, "stereo", extra={"x": 1})
    data = (tmp_path / "m.map").read_bytes()
    magic, version, header_len, crc = struct.unpack_from("<8sIII", data)
    assert (magic, version) == (b"SLAMMAP\0", 2)
    header_bytes = data[20: 20 + header_len]
    assert zlib.crc32(header_bytes) == crc
    header = msgpack.unpackb(header_bytes)
    payload = data[20 + header_len:]
    assert header["payload"]["length"] == len(payload)
    assert header["payload"]["sha256"] == hashlib.sha256(payload).hexdigest()
    assert header["sensor"] == "stereo" and header["calibration"]["fy"] == 251.0
    body = msgpack.unpackb(payload, strict_map_key=False)
    assert body["extra"] == {"x": 1} and body["scalars"]["next_kf_id"] == 12
    uv = body["arrays"]["kp.uv"]
    assert (uv["dtype"], uv["shape"]) == ("<f8", [10 * 400, 2])  # keyframes 4 and 7 culled
    kf5 = np.frombuffer(uv["data"], "<f8").reshape(-1, 2)[4 * 400: 5 * 400]
    np.testing.assert_array_equal(kf5, m.keyframes[5].frame.uv)


def test_culled_keyframes_keep_their_parent_link_and_pose(tmp_path: Path) -> None:
    m = rich_map()
    save_map(tmp_path / "m.map", m, CALIB, "rgbd")
    loaded = load_map(tmp_path / "m.map").map
    for kid in (4, 7):
        kf = loaded.keyframes[kid]
        assert kf.bad and kf.T_cam_parent is not None and kf.parent_id >= 0
        np.testing.assert_array_equal(loaded.keyframe_pose(kid), m.keyframe_pose(kid))
        assert not loaded.keyframes[kf.parent_id].bad or kf.parent_id in (4, 7)
    assert loaded.n_keyframes() == 10 and loaded.n_points() == m.n_points()


def test_a_loaded_map_continues_like_the_original(tmp_path: Path) -> None:
    """The same edits on the original and the loaded map give the same maps (ids, graph,
    point store)."""
    m = rich_map()
    save_map(tmp_path / "m.map", m, CALIB, "mono")
    loaded = load_map(tmp_path / "m.map").map
    for mm in (m, loaded):
        rng = np.random.default_rng(5)
        frame = make_frame(rng.uniform(0, 200, (50, 2)), frame_id=99, rng=rng)
        kf = make_keyframe(mm, frame, np.eye(4))
        some = list(mm.points)[:30]
        for i, pid in enumerate(some):
            mm.add_observation(pid, kf.id, i)
        new = mm.add_point(np.array([0.1, 0.2, 3.0]), kf, 40)
        mm.update_normals_and_depths([*some, new.id])
        mm.update_connections(kf.id)
        mm.erase_keyframe(9)
        mm.replace_point(some[0], some[1])
    assert_maps_equal(m, loaded)


def test_keypoints_naming_erased_points_are_stored_as_no_point(tmp_path: Path) -> None:
    m = build_map(6, 120, 120)  # keypoints 100.. of each keyframe are unmatched
    kf = m.keyframes[5]
    kf.frame.point_ids[110:113] = [10_000, 3, 4]  # tracked matches mapping has not added yet
    m.erase_point(3)
    save_map(tmp_path / "m.map", m, CALIB, "stereo")
    loaded = load_map(tmp_path / "m.map").map.keyframes[5]
    assert loaded.point_ids[110:113].tolist() == [-1, -1, 4]
    np.testing.assert_array_equal(loaded.point_ids[:110], kf.point_ids[:110])


def test_save_waits_for_the_map_lock(tmp_path: Path) -> None:
    """A mapping thread holding the lock delays the snapshot instead of racing it."""
    m = build_map(6, 120, 100)
    done = threading.Event()

    def save() -> None:
        save_map(tmp_path / "m.map", m, CALIB, "rgbd")
        done.set()

    with m.lock:
        saver = threading.Thread(target=save)
        saver.start()
        assert not done.wait(0.3)
        m.erase_keyframe(3)  # a change made before the lock is released is in the file
    saver.join(10)
    assert done.is_set() and load_map(tmp_path / "m.map").map.keyframes[3].bad


def test_an_empty_map_round_trips(tmp_path: Path) -> None:
    save_map(tmp_path / "e.map", Map(), CALIB, "mono")
    loaded = load_map(tmp_path / "e.map")
    assert_maps_equal(Map(), loaded.map)
    assert loaded.extra == {} and loaded.info.n_keyframes == 0


def test_large_map_save_and_load_timing(tmp_path: Path) -> None:
    m = build_map(300, 30_000, 1000)
    path = tmp_path / "big.map"
    t0 = time.perf_counter()
    info = save_map(path, m, CALIB, "rgbd")
    t1 = time.perf_counter()
    loaded = load_map(path).map
    t2 = time.perf_counter()
    log.warning("300-keyframe 30k-point map (%.1f MB): save %.3f s, load %.3f s",
                path.stat().st_size / 1e6, t1 - t0, t2 - t1)
    assert info.n_points == 30_000 and info.n_keypoints == 300_000
    assert list(loaded.points) == list(m.points)
    ids = m.store.live_ids()
    np.testing.assert_array_equal(loaded.store.get("xyz", ids), m.store.get("xyz", ids))


# --- foreign, damaged and missing files ---------------------------------------------------
@pytest.fixture(scope="module")
def good_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("good") / "good.map"
    save_map(path, build_map(6, 120, 100), CALIB, "rgbd", extra={"k": 1})
    return path.read_bytes()


def _raises(path: Path, *words: str, **kwargs: Any) -> str:
    with pytest.raises(MapFileError) as err:
        load_map(path, **kwargs)
    msg = str(err.value)
    assert str(path) in msg, msg
    for w in words:
        assert w in msg, msg
    return msg


def _header_end(data: bytes) -> int:
    return 20 + struct.unpack_from("<I", data, 12)[0]


@pytest.mark.parametrize("where", ["prefix", "header", "payload", "last_byte"])
def test_truncated_files_are_reported(tmp_path: Path, good_bytes: bytes, where: str) -> None:
    cut = {"prefix": 13, "header": _header_end(good_bytes) - 5,
           "payload": (len(good_bytes) + _header_end(good_bytes)) // 2,
           "last_byte": len(good_bytes) - 1}[where]
    path = tmp_path / "cut.map"
    path.write_bytes(good_bytes[:cut])
    _raises(path, "truncated")
    if where != "prefix":
        with pytest.raises(MapFileError, match="truncated"):
            read_map_info(path)


@pytest.mark.parametrize("where", ["header", "payload_start", "payload_end"])
def test_flipped_bytes_are_reported_as_corruption(
    tmp_path: Path, good_bytes: bytes, where: str
) -> None:
    pos = {"header": _header_end(good_bytes) - 30, "payload_start": _header_end(good_bytes) + 3,
           "payload_end": len(good_bytes) - 2}[where]
    data = bytearray(good_bytes)
    data[pos] ^= 0x10
    path = tmp_path / "flip.map"
    path.write_bytes(bytes(data))
    _raises(path, "corrupt", "checksum")


def test_trailing_garbage_is_corruption(tmp_path: Path, good_bytes: bytes) -> None:
    path = tmp_path / "long.map"
    path.write_bytes(good_bytes + b"\0\0")
    _raises(path, "corrupt")


@pytest.mark.parametrize("content", [b"", b"hello world, this is not a map at all",
                                     b"\x89PNG\r\n\x1a\n" + bytes(40)])
def test_other_files_are_not_map_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "other.bin"
    path.write_bytes(content)
    _raises(path, "not a map file")
    with pytest.raises(MapFileError, match="not a map file"):
        read_map_info(path)


def test_a_newer_format_version_is_refused(tmp_path: Path, good_bytes: bytes) -> None:
    path = tmp_path / "future.map"
    path.write_bytes(MAGIC + struct.pack("<I", FORMAT_VERSION + 1) + good_bytes[12:])
    _raises(path, f"newer version {FORMAT_VERSION + 1}", f"reads up to version {FORMAT_VERSION}")


def test_a_retired_format_version_is_refused(tmp_path: Path, good_bytes: bytes) -> None:
    path = tmp_path / "old.map"
    path.write_bytes(MAGIC + struct.pack("<I", 0) + good_bytes[12:])
    _raises(path, "version 0")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    _raises(tmp_path / "nope.map", "does not exist")
    _raises(tmp_path, "is a directory")
    with pytest.raises(MapFileError, match="does not exist"):
        read_map_info(tmp_path / "nope.map")


def _set(name: str, index: int, value: Any) -> Any:
    def fn(parts: MapParts) -> None:
        a = parts.array(name)
        a.reshape(-1)[index] = value
        parts.set_array(name, a)
    return fn


def test_an_internally_inconsistent_map_is_refused(tmp_path: Path, good_bytes: bytes) -> None:
    """A file with a valid checksum whose observations or keypoints name missing items."""
    cases = [("obs.kf_id", 999, "missing keyframe 999"), ("obs.kp_idx", 100, "keypoint 100"),
             ("kp.point_id", 5_000, "missing item 5000"), ("covis.kf_id", -3, "missing keyframe"),
             ("kf.kp_offsets", 7, "offsets")]
    for field, value, words in cases:
        (tmp_path / "bad.map").write_bytes(edit(good_bytes, _set(field, 0, value)))
        _raises(tmp_path / "bad.map", "inconsistent", words)


def test_a_map_that_would_not_load_is_not_saved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    encode = persistence.encode_map

    def broken(m: Map) -> Any:
        arrays, scalars = encode(m)
        arrays["obs.kf_id"] = arrays["obs.kf_id"].copy()
        arrays["obs.kf_id"][0] = 999
        return arrays, scalars

    monkeypatch.setattr(persistence, "encode_map", broken)
    with pytest.raises(MapFileError, match=r"cannot save .*bad\.map.*missing keyframe 999"):
        save_map(tmp_path / "bad.map", build_map(6, 120, 100), CALIB, "rgbd")
    assert list(tmp_path.iterdir()) == []


# --- another camera, another sensor --------------------------------------------------------
@pytest.mark.parametrize("change", [
    {"fx": 250.01}, {"cy": 120.0}, {"width": 640}, {"dist": (0.02, -0.002, 5e-4, 3e-4, 0.0)},
    {"dist": (0.0, 0.0, 0.0, 0.0, 0.0)},
])
def test_another_camera_is_refused(tmp_path: Path, good_bytes: bytes,
                                   change: dict[str, Any]) -> None:
    path = tmp_path / "m.map"
    path.write_bytes(good_bytes)
    other = replace(CALIB, camera=replace(CALIB.camera, **change))
    msg = _raises(path, "another camera", "fx=250 fy=251", calibration=other)
    assert "stored" in msg and "given" in msg


def test_the_same_camera_within_tolerance_is_accepted(tmp_path: Path, good_bytes: bytes) -> None:
    path = tmp_path / "m.map"
    path.write_bytes(good_bytes)
    cam = replace(CALIB.camera, fx=250.0 * (1 + 1e-8), dist=(0.01, -0.002, 5e-4, 3e-4))
    loaded = load_map(path, calibration=replace(CALIB, camera=cam, fps=15.0), sensor="rgbd")
    assert loaded.calibration == CALIB


def test_another_sensor_is_refused(tmp_path: Path, good_bytes: bytes) -> None:
    path = tmp_path / "m.map"
    path.write_bytes(good_bytes)
    _raises(path, "rgbd", "mono", sensor="mono")


def test_a_loaded_map_knows_each_reference_keypoint(tmp_path: Path) -> None:
    """ref_kp, obs_levels and the observation blocks are not in the file: loading
    derives them from the observations, so that reference_observations reads the same
    as from the saved map."""
    m = rich_map()
    path = tmp_path / "run.map"
    save_map(path, m, CALIB, "rgbd")
    loaded = load_map(path, calibration=CALIB, sensor="rgbd").map
    pids = np.array(sorted(m.points), np.int64)
    assert np.array_equal(loaded.store.get("ref_kp", pids), m.store.get("ref_kp", pids))
    assert np.array_equal(loaded.store.get("obs_levels", pids),
                          m.store.get("obs_levels", pids))
    for got, want in zip(loaded.store.observations(pids), m.store.observations(pids)):
        assert np.array_equal(got, want)
    assert np.count_nonzero(loaded.store.get("ref_kp", pids) >= 0) > 0
    a, b = m.reference_observations(pids), loaded.reference_observations(pids)
    assert np.array_equal(a.rows, b.rows) and a.kf_ids == b.kf_ids
    assert np.array_equal(a.uv, b.uv) and np.array_equal(a.kf_index, b.kf_index)

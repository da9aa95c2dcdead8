"""Map files: exact round trips, clear errors on damaged or foreign files, atomic saves."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
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

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[2]
CALIB = Calibration(
    PinholeCamera(250.0, 251.0, 159.5, 119.5, 320, 240, dist=(0.01, -0.002, 5e-4, 3e-4, 0.0)),
    fps=30.0, bf=25.0, depth_factor=5000.0,
)
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
    chans = [(seed * 37 + 3 * xx + (c + 1) * yy) % 200 + 20 for c in range(3)]
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
    m.keyframes[1].frame.color = smooth_image((24, 32, 3), 1)
    m.keyframes[2].frame.color = smooth_image((24, 32), 2)
    m.keyframes[1].frame.depth_image = depth_image((24, 32), 1)
    m.keyframes[5].frame.depth_image = depth_image((24, 32), 5)
    m.keyframes[6].frame.image = rng.integers(0, 256, (24, 32), dtype=np.uint8)
    m.keyframes[6].frame.right_image = rng.integers(0, 256, (24, 32), dtype=np.uint8)
    m.keyframes[8].frame.color = rng.integers(0, 256, (2, 3, 4, 5), dtype=np.uint8)  # raw
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
POINT_SLOTS = {"_s", "bad", "first_kf_id", "id", "observations", "ref_kf_id", "replaced_by"}
POINT_STORE_FIELDS = ("xyz_world", "descriptor", "normal", "min_dist", "max_dist", "n_visible",
                      "n_found")
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
        assert a.store.alive[pid] == b.store.alive[pid]
    assert b.store.alive.sum() == a.store.alive.sum()


# --- round trips --------------------------------------------------------------------------
def test_the_format_covers_every_field_of_the_map_classes() -> None:
    """A new field in these classes must be added to the map format and to this test."""
    assert {f.name for f in fields(KeyFrame)} == KEYFRAME_FIELDS
    assert {f.name for f in fields(Frame)} == FRAME_FIELDS
    assert set(MapPoint.__slots__) == POINT_SLOTS
    assert set(vars(Map())) == MAP_ATTRS


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
    assert info.n_points == len(m.points) and info.n_keypoints == 12 * 400
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
    assert (uv["dtype"], uv["shape"]) == ("<f8", [12 * 400, 2])
    kf5 = np.frombuffer(uv["data"], "<f8").reshape(-1, 2)[5 * 400: 6 * 400]
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
    np.testing.assert_array_equal(loaded.store.xyz[:30_000], m.store.xyz[:30_000])


# --- keyframe images (format version 2) and version 1 files --------------------------------
V1_FILE = Path(__file__).parent / "data" / "v1_rgbd.map"


def _v1_colours() -> tuple[np.ndarray, np.ndarray]:
    """The colour images tests/map/data/v1_rgbd.map was written with (format version 1)."""
    yy, xx = np.mgrid[0:24, 0:32]
    return (np.stack([xx * 8, yy * 10, (xx + yy) * 4], -1).astype(np.uint8),
            (xx * 7 + yy).astype(np.uint8))


def test_a_version_1_file_loads_with_its_colour_images(tmp_path: Path) -> None:
    """A map saved by format version 1 (raw colour, no other images) loads, and saved
    again it becomes version 2 with the same content."""
    loaded = load_map(V1_FILE, calibration=CALIB, sensor="rgbd")
    assert loaded.info.format_version == 1 and loaded.extra == {"made_by": "format version 1"}
    m = loaded.map
    assert list(m.keyframes) == [0, 1, 2, 3] and m.keyframes[3].bad and m.n_points() == 30
    rgb, grey = _v1_colours()
    np.testing.assert_array_equal(m.keyframes[1].frame.color, rgb)
    np.testing.assert_array_equal(m.keyframes[2].frame.color, grey)
    for kf in m.keyframes.values():
        f = kf.frame
        assert f.depth_image is None and f.image is None and f.right_image is None
        assert (kf.id in (1, 2)) == (f.color is not None)
    save_map(tmp_path / "v2.map", m, CALIB, "rgbd", color_quality=None)
    again = load_map(tmp_path / "v2.map")
    assert again.info.format_version == FORMAT_VERSION == 2
    assert_maps_equal(m, again.map, color_atol=0)


def _camera_images(n: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(colour BGR, grey, depth metres) of ``n`` 640x480 views of the synthetic room."""
    from slam.synthetic.source import make_synthetic_source

    src = make_synthetic_source("forward", "rgbd", n_frames=n)
    out = []
    for sf in src:
        assert sf.depth_m is not None
        tint = np.linspace(0.6, 1.0, sf.image.shape[1])[None, :, None] * [0.7, 1.0, 0.85]
        colour = (sf.image[:, :, None] * tint).astype(np.uint8)  # camera-like: smooth chroma
        out.append((colour, sf.image, sf.depth_m))
    return out


def test_keyframe_images_are_compressed(tmp_path: Path) -> None:
    """640x480 colour (JPEG), grey (PNG) and depth (16-bit PNG) round-trip: grey exactly,
    depth within half a 0.2 mm step, colour close; the file is far below the raw bytes."""
    m = build_map(3, 30, 50)
    views = _camera_images(3)
    for kf, (colour, grey, depth) in zip(m.keyframes.values(), views):
        kf.frame.color, kf.frame.image, kf.frame.depth_image = colour, grey, depth
    raw_bytes = sum(c.nbytes + g.nbytes + d.nbytes for c, g, d in views)
    save_map(tmp_path / "m.map", m, CALIB, "rgbd")
    size = (tmp_path / "m.map").stat().st_size
    log.warning("3 keyframes of 640x480 colour, grey and depth: %.2f MB raw, %.2f MB file",
                raw_bytes / 1e6, size / 1e6)
    assert size < 0.35 * raw_bytes
    loaded = load_map(tmp_path / "m.map").map
    for kf, (colour, grey, depth) in zip(loaded.keyframes.values(), views):
        f = kf.frame
        assert f.depth_image is not None and f.color is not None
        np.testing.assert_array_equal(f.image, grey)
        assert f.depth_image.dtype == np.float32 and f.depth_image.shape == depth.shape
        assert np.abs(f.depth_image - depth).max() <= 0.5 / 5000 + 1e-6
        np.testing.assert_array_equal(f.depth_image == 0, depth == 0)
        psnr = cv2.PSNR(f.color, colour)
        assert psnr > 35.0, psnr
    save_map(tmp_path / "lossless.map", m, CALIB, "rgbd", color_quality=None)
    for ka, kb in zip(m.keyframes.values(), load_map(tmp_path / "lossless.map").map.keyframes
                      .values()):
        np.testing.assert_array_equal(ka.frame.color, kb.frame.color)


def test_deep_and_missing_depth_readings(tmp_path: Path) -> None:
    """Depth beyond 13.1 m gets a coarser step instead of overflowing; NaN and negative
    readings are stored as 0 (no reading); TUM depth round-trips exactly."""
    m = build_map(3, 30, 50)
    far = np.full((24, 32), 40.0, np.float32)
    far[0, :4] = [np.nan, -1.0, 0.0, 65.5]
    m.keyframes[0].frame.depth_image = far
    tum = depth_image((24, 32), 9)
    m.keyframes[1].frame.depth_image = tum
    save_map(tmp_path / "m.map", m, CALIB, "rgbd")
    loaded = load_map(tmp_path / "m.map").map
    got = loaded.keyframes[0].frame.depth_image
    assert got is not None
    np.testing.assert_array_equal(got[0, :3], [0.0, 0.0, 0.0])
    step = 65.5 / 65535
    assert abs(got[0, 3] - 65.5) <= step and np.abs(got[1:] - 40.0).max() <= step
    np.testing.assert_array_equal(loaded.keyframes[1].frame.depth_image, tum)


def test_an_image_that_does_not_decode_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    encode = persistence.encode_image_arrays

    def broken(*args: Any, **kwargs: Any) -> Any:
        arrays = encode(*args, **kwargs)
        data = arrays["depth.data"].copy()
        data[len(data) // 2:] = 0
        return arrays | {"depth.data": data}

    m = rich_map()
    monkeypatch.setattr(persistence, "encode_image_arrays", broken)
    save_map(tmp_path / "bad.map", m, CALIB, "rgbd")
    _raises(tmp_path / "bad.map", "inconsistent", "depth image")


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


def test_an_internally_inconsistent_map_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file with a valid checksum whose observations or keypoints name missing items."""
    encode = persistence._encode_map

    def broken(field: str, value: int) -> Any:
        def enc(m: Map) -> Any:
            arrays, scalars = encode(m)
            arrays[field] = arrays[field].copy()
            arrays[field][0] = value
            return arrays, scalars
        return enc

    cases = [("obs.kf_id", 999, "missing keyframe 999"), ("obs.kp_idx", 100, "keypoint 100"),
             ("kp.point_id", 5_000, "missing item 5000"), ("covis.kf_id", -3, "missing keyframe"),
             ("kf.kp_offsets", 7, "offsets")]
    for field, value, words in cases:
        monkeypatch.setattr(persistence, "_encode_map", broken(field, value))
        save_map(tmp_path / "bad.map", build_map(6, 120, 100), CALIB, "rgbd")
        _raises(tmp_path / "bad.map", "inconsistent", words)


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


# --- saving: errors and atomicity ----------------------------------------------------------
def test_save_errors(tmp_path: Path) -> None:
    m = build_map(3, 30, 50)
    with pytest.raises(MapFileError, match="does not exist"):
        save_map(tmp_path / "no" / "dir.map", m, CALIB, "rgbd")
    with pytest.raises(MapFileError, match="directory"):
        save_map(tmp_path, m, CALIB, "rgbd")
    with pytest.raises(TypeError, match="msgpack"):
        save_map(tmp_path / "x.map", m, CALIB, "rgbd", extra={"a": object()})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_failed_save_keeps_the_previous_file_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    path = tmp_path / "m.map"
    old = build_map(6, 120, 100, seed=1)
    save_map(path, old, CALIB, "rgbd")
    before = path.read_bytes()
    real_write = persistence._write_chunks

    def half_then_fail(fh: Any, chunks: list[Any]) -> None:
        real_write(fh, chunks[: len(chunks) // 2])
        raise error

    monkeypatch.setattr(persistence, "_write_chunks", half_then_fail)
    with pytest.raises(MapFileError if isinstance(error, OSError) else KeyboardInterrupt):
        save_map(path, rich_map(), CALIB, "rgbd")
    assert [p.name for p in tmp_path.iterdir()] == ["m.map"]
    assert path.read_bytes() == before
    assert_maps_equal(old, load_map(path).map)


_CHILD = """
import sys
import threading
sys.path.insert(0, {root!r})
from tests.map.test_persistence import CALIB, build_map
from slam.map.persistence import save_map
m = build_map(300, 30000, 1000)
print("ready", flush=True)
while True:
    save_map({target!r}, m, CALIB, "rgbd")
"""


def _kill_saver(target: Path, when: str, rng: np.random.Generator) -> None:
    """Start a process saving a large map to ``target`` in a loop and SIGKILL it, either
    while a temporary file is being written ("mid_write") or at a random moment."""
    proc = subprocess.Popen([sys.executable, "-c", _CHILD.format(root=str(REPO_ROOT),
                                                                  target=str(target))],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 20.0
        if when == "mid_write":
            while not any(p.suffix == ".tmp" for p in target.parent.iterdir()):
                assert time.monotonic() < deadline, "the saver never wrote a temporary file"
        else:
            time.sleep(float(rng.uniform(0.0, 0.6)))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_sigkill_during_saves_never_leaves_a_broken_map(tmp_path: Path) -> None:
    target = tmp_path / "live.map"
    rng = np.random.default_rng()
    _kill_saver(target, "mid_write", rng)  # killed during the very first save: no map yet
    assert not target.exists() and any(p.suffix == ".tmp" for p in tmp_path.iterdir())
    save_map(target, build_map(3, 30, 50), CALIB, "rgbd")  # a previous good file
    for trial, when in enumerate(["mid_write", "random", "random"]):
        _kill_saver(target, when, rng)
        n_points = load_map(target, sensor="rgbd").info.n_points  # old (30) or new (30k)
        temps = [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]
        log.warning("kill %d (%s): map with %d points, %d temporary files left", trial, when,
                    n_points, len(temps))
        assert n_points in (30, 30_000)
    # The next save removes what the killed savers left behind.
    save_map(target, build_map(3, 30, 50), CALIB, "rgbd")
    assert [p.name for p in tmp_path.iterdir()] == ["live.map"]


def test_a_live_savers_temporary_file_is_left_alone(tmp_path: Path) -> None:
    mine = tmp_path / f".m.map.{os.getpid()}.0badcafe.tmp"
    mine.write_bytes(b"partial")
    save_map(tmp_path / "m.map", Map(), CALIB, "rgbd")
    assert mine.exists()

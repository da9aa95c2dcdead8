"""Validation of map files (issue 12, finding 4): a header field of the wrong type, a
NaN pose, an absurd scalar, a forged image size... every such file is refused with a
MapFileError naming the file, before anything is decoded or allocated. The forged
files carry valid checksums (``tests.map.map_edit``), so only the validation behind
the checksums stands between them and the map."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import msgpack
import numpy as np
import pytest

from slam.errors import MapFileError
from slam.map import image_codec
from slam.map.persistence import load_map, read_map_info, save_map
from tests.map.map_edit import MapParts, edit, payload_of, seal, split_header_only
from tests.map.test_persistence import CALIB, build_map, depth_image, smooth_image


@pytest.fixture(scope="module")
def good() -> bytes:
    """A small RGB-D map file with colour and depth images of the camera's size."""
    import tempfile

    m = build_map(6, 120, 100)
    for i, kf in enumerate(m.keyframes.values()):
        kf.frame.color = smooth_image((240, 320, 3), i)
        kf.frame.depth_image = depth_image((240, 320), i)
    m.erase_keyframe(4)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "good.map"
        save_map(path, m, CALIB, "rgbd")
        return path.read_bytes()


def _refused(tmp_path: Path, data: bytes, *words: str) -> str:
    path = tmp_path / "forged.map"
    path.write_bytes(data)
    with pytest.raises(MapFileError) as err:
        load_map(path, calibration=CALIB, sensor="rgbd")
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg, msg
    reason = msg.replace(str(path), "")  # the words must be in the reason, not the path
    assert "internal error" not in reason, msg  # refused by a check, not the safety net
    for w in words:
        assert w in reason, msg
    return msg


def _header(keys: tuple[str, ...], value: Any) -> Any:
    def fn(parts: MapParts) -> None:
        d = parts.header
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value
    return fn


def _scalar(name: str, value: Any) -> Any:
    def fn(parts: MapParts) -> None:
        parts.body["scalars"][name] = value
    return fn


def _array(name: str, index: Any, value: Any) -> Any:
    def fn(parts: MapParts) -> None:
        a = parts.array(name)
        a[index] = value
        parts.set_array(name, a)
    return fn


def _with_payload(good: bytes, payload: bytes) -> bytes:
    """``good`` with another payload (counts zeroed so that the header stays valid)."""
    parts = split_header_only(good)
    parts.header["counts"] = dict.fromkeys(parts.header["counts"], 0)
    return seal(parts, payload)


def test_the_unmodified_file_loads(good: bytes, tmp_path: Path) -> None:
    (tmp_path / "good.map").write_bytes(good)
    assert load_map(tmp_path / "good.map", calibration=CALIB, sensor="rgbd").map.n_keyframes()


# --- finding 4: header fields of the wrong type -------------------------------------------
@pytest.mark.parametrize("value", ["12", None, float("nan"), -1, True, 1.5, [1]])
def test_a_payload_length_that_is_not_an_integer_is_refused(
    good: bytes, tmp_path: Path, value: Any
) -> None:
    data = edit(good, _header(("payload", "length"), value), fix_length=False)
    _refused(tmp_path, data, "malformed header", "length")
    with pytest.raises(MapFileError, match="length"):
        read_map_info(tmp_path / "forged.map")


def test_a_payload_length_as_a_string_of_the_right_number_is_refused(
    good: bytes, tmp_path: Path
) -> None:
    n = str(len(payload_of(good)))
    _refused(tmp_path, edit(good, _header(("payload", "length"), n), fix_length=False),
             "length")


@pytest.mark.parametrize("keys, value, words", [
    (("counts", "keyframes"), -1, "keyframes"), (("counts", "points"), "7", "points"),
    (("counts", "keypoints"), 10**15, "keypoints"), (("counts", "bad_keyframes"), 99, "culled"),
    (("sensor",), "lidar", "sensor"), (("sensor",), 3, "sensor"),
    (("created",), 12, "created"), (("format_version",), 1, "format_version"),
    (("payload", "encoding"), "zip", "encoding"),
    (("calibration", "fx"), float("nan"), "fx"), (("calibration", "fx"), 1e308, "fx"),
    (("calibration", "fy"), -250.0, "fy"), (("calibration", "cx"), "159.5", "cx"),
    (("calibration", "width"), 0, "width"), (("calibration", "height"), 10**9, "height"),
    (("calibration", "width"), 320.0, "width"), (("calibration", "dist"), [1e20, 0, 0, 0],
                                                 "dist"),
    (("calibration", "dist"), [0.1, 0.2, 0.3], "dist"), (("calibration", "fps"),
                                                         float("inf"), "fps"),
    (("calibration", "depth_factor"), -5.0, "depth_factor"),
    (("calibration", "rgb_order"), "yes", "rgb_order"),
    (("calibration",), [1, 2], "expected a map"),
])
def test_header_fields_are_type_and_range_checked(
    good: bytes, tmp_path: Path, keys: tuple[str, ...], value: Any, words: str
) -> None:
    _refused(tmp_path, edit(good, _header(keys, value)), "malformed header", words)


# --- finding 4: absurd scalars and non-finite values ------------------------------------
@pytest.mark.parametrize("name, value", [
    ("n_levels", 10**9), ("n_levels", 0), ("n_levels", 8.0), ("n_levels", None),
    ("scale_factor", float("nan")), ("scale_factor", 1.0), ("scale_factor", 1e9),
    ("scale_factor", "1.2"), ("next_kf_id", 2**60), ("next_point_id", -1),
    ("origin_kf_id", 999), ("map_version", True),
])
def test_scalars_are_type_and_range_checked(
    good: bytes, tmp_path: Path, name: str, value: Any
) -> None:
    _refused(tmp_path, edit(good, _scalar(name, value)), "inconsistent", name)


@pytest.mark.parametrize("name, index, value", [
    ("kf.T_cam_world", (1, 0, 0), np.nan), ("kf.T_cam_world", (2, 1, 3), np.inf),
    ("kf.T_cam_world", (0, 0, 0), 2.0), ("kf.T_cam_world", (0, 3, 0), 0.5),
    ("kf.T_cam_world", (3, 2, 3), 1e12), ("kf.frame_T_cam_world", (2, 0, 1), np.nan),
    ("kf.T_cam_parent", (4, 0, 0), np.nan), ("kf.timestamp", 3, np.nan),
    ("kp.uv", (5, 0), np.nan), ("kp.u_right", 9, -np.inf), ("kp.depth_m", 7, np.nan),
    ("kp.inv_sigma2", 0, 0.0), ("kp.octave", 11, 8), ("kp.octave", 11, -1),
    ("pt.xyz_world", (3, 2), np.inf), ("pt.normal", (0, 0), np.nan),
    ("pt.min_dist", 2, -1.0), ("pt.max_dist", 2, np.nan), ("pt.n_visible", 1, -5),
    ("pt.ref_kf_id", 0, 10**6), ("kf.depth_scale", 0, np.nan), ("kf.depth_scale", 1, 0.0),
    ("kf.size", (0, 0), 640), ("covis.weight", 0, -3),
])
def test_every_float_is_finite_and_every_value_in_range(
    good: bytes, tmp_path: Path, name: str, index: Any, value: Any
) -> None:
    _refused(tmp_path, edit(good, _array(name, index, value)), "inconsistent", name)


def test_a_cycle_of_culled_keyframes_is_refused(good: bytes, tmp_path: Path) -> None:
    def fn(parts: MapParts) -> None:
        bad, has = parts.array("kf.bad"), parts.array("kf.has_T_cam_parent")
        parent, T = parts.array("kf.parent_id"), parts.array("kf.T_cam_parent")
        for a, b in ((2, 3), (3, 2)):
            bad[a], has[a], parent[a], T[a] = True, True, b, np.eye(4)
        for name, arr in (("kf.bad", bad), ("kf.has_T_cam_parent", has),
                          ("kf.parent_id", parent), ("kf.T_cam_parent", T)):
            parts.set_array(name, arr)
        parts.header["counts"]["bad_keyframes"] = int(bad.sum())
    _refused(tmp_path, edit(good, fn), "inconsistent", "cycle")


def test_a_point_observed_twice_by_one_keyframe_is_refused(good: bytes,
                                                           tmp_path: Path) -> None:
    """A point's observations name each keyframe once (the map keeps them in a
    dictionary by keyframe, and as arrays in the store: both must agree)."""
    def fn(parts: MapParts) -> None:
        offsets, kf = parts.array("pt.obs_offsets"), parts.array("obs.kf_id")
        i = int(np.flatnonzero(np.diff(offsets) >= 2)[0])  # a point seen twice or more
        kf[offsets[i] + 1] = kf[offsets[i]]
        parts.set_array("obs.kf_id", kf)
    _refused(tmp_path, edit(good, fn), "inconsistent", "twice")


# --- finding 4: image sizes checked before decoding ---------------------------------------
@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The sizes declared by the images the map loader hands to cv2.imdecode that are
    not the camera's 320 x 240 (there must be none)."""
    calls: list[Any] = []
    imdecode = cv2.imdecode

    def spy(buf: Any, flag: int) -> Any:
        head = bytes(np.asarray(buf[:24], np.uint8))
        if head.startswith(b"\x89PNG") and head[16:24] != (320).to_bytes(4, "big") + (
                240).to_bytes(4, "big"):
            calls.append(head[16:24])
        return imdecode(buf, flag)

    monkeypatch.setattr(image_codec.cv2, "imdecode", spy)
    return calls


def _forge_png(parts: MapParts, kind: str, width: int, height: int) -> None:
    """Replace keyframe 0's ``kind`` image by a tiny PNG that declares width x height."""
    img = np.zeros((4, 4), np.uint16 if kind == "depth" else np.uint8)
    png = bytearray(cv2.imencode(".png", img)[1].tobytes())
    png[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    data, off = parts.array(f"{kind}.data"), parts.array(f"kf.{kind}_offsets")
    new = np.concatenate([np.frombuffer(bytes(png), np.uint8), data[off[1]:]])
    off[1:] += len(png) - off[1]
    codec = parts.array(f"kf.{kind}_codec")
    codec[0] = image_codec.Codec.PNG
    parts.set_array(f"{kind}.data", new)
    parts.set_array(f"kf.{kind}_offsets", off)
    parts.set_array(f"kf.{kind}_codec", codec)


@pytest.mark.parametrize("kind", ["color", "depth"])
def test_an_image_declaring_a_huge_size_is_never_decoded(
    good: bytes, tmp_path: Path, no_decoding: list[Any], kind: str
) -> None:
    """A few bytes of PNG declaring 100000 x 100000 pixels (10 GB decoded)."""
    data = edit(good, lambda p: _forge_png(p, kind, 100_000, 100_000))
    _refused(tmp_path, data, "inconsistent", kind, "100000")
    assert no_decoding == []


@pytest.mark.parametrize("shape, words", [
    ([100_000, 100_000, 3, 1], "camera's size"), ([240, 320, 2, 1], "channels"),
    ([120, 160, 3, 1], "camera's size"), ([240, 320, 3, 5], "must be"),
])
def test_declared_image_shapes_are_checked_against_the_camera(
    good: bytes, tmp_path: Path, no_decoding: list[Any], shape: list[int], words: str
) -> None:
    def fn(parts: MapParts) -> None:
        s, nd = parts.array("kf.color_shape"), parts.array("kf.color_ndim")
        s[0] = shape
        nd[0] = 4 if shape[3] != 1 else 3
        parts.set_array("kf.color_shape", s)
        parts.set_array("kf.color_ndim", nd)
    _refused(tmp_path, edit(good, fn), "inconsistent", words)
    assert no_decoding == []


def test_a_depth_image_of_three_dimensions_is_refused(good: bytes, tmp_path: Path) -> None:
    _refused(tmp_path, edit(good, _array("kf.depth_ndim", 0, 3)), "inconsistent", "depth")


# --- the payload's structure --------------------------------------------------------------
def test_a_payload_of_empty_containers_is_refused_without_building_them(
    good: bytes, tmp_path: Path
) -> None:
    """Two million one-byte empty lists would be ~120 MB of Python objects."""
    bomb = b"\x83\xa7scalars\x80\xa5extra\xdd" + (2_000_000).to_bytes(4, "big") \
        + b"\x90" * 2_000_000 + b"\xa6arrays\x80"
    _refused(tmp_path, _with_payload(good, bomb), "corrupt", "longer than")


@pytest.mark.parametrize("payload, words", [
    (msgpack.packb([1, 2, 3]), "map"),
    (msgpack.packb({"scalars": {}, "extra": [], "arrays": {}}), "extra"),
    (msgpack.packb({"scalars": {}, "extra": {}, "arrays": {}, "x": 1}), "map of 4"),
    (msgpack.packb({"scalars": {}, "extra": {}, "arrays": {}}) + b"\0", "after"),
    (msgpack.packb({"scalars": {}, "extra": {}, "arrays": {"a": {"dtype": "|O", "shape": [1],
                                                                 "data": b"12345678"}}}),
     "dtype"),
    (msgpack.packb({"scalars": {}, "extra": {}, "arrays": {"a": {"dtype": "<f8", "shape":
                                                                 [2**40, 2**40],
                                                                 "data": b"12345678"}}}),
     "do not fit"),
])
def test_malformed_payloads_are_refused(
    good: bytes, tmp_path: Path, payload: bytes, words: str
) -> None:
    _refused(tmp_path, _with_payload(good, payload), "corrupt", words)


_LOAD_IN_CHILD = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
from slam.errors import MapFileError
from slam.map.persistence import load_map
try:
    load_map(sys.argv[1])
except MapFileError as exc:
    print(exc)
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("special", ["fifo", "/dev/zero"])
def test_local_loads_refuse_special_files(tmp_path: Path, special: str) -> None:
    """``slam run --load-map /dev/zero`` read until memory ran out and a FIFO blocked for
    good: both are refused at once, nothing is read (in a child process with a memory
    limit and a deadline, so that a regression fails instead of hanging)."""
    import os
    import subprocess
    import sys

    path = Path(special)
    if special == "fifo":
        path = tmp_path / "pipe.map"
        os.mkfifo(path)
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run([sys.executable, "-c", _LOAD_IN_CHILD, str(path)], cwd=root,
                             capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"loading {path} did not return within 60 s")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == f"{path} is not a regular file, not a map file"

"""The service's map directory (issue 12, findings 2 and 3): maps are named, never
reached by path; special files are refused without blocking or reading; one save at a
time, rate-limited, written in the background. The same through the running service:
``tests/server/test_service_maps.py``."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from server.maps import MapDirectory, MapSaver, ServiceMaps, default_map_dir, map_file_name
from slam.errors import MapFileError
from slam.map import persistence
from slam.map.map import Map
from tests.map.test_persistence import CALIB, build_map

BAD_NAMES = ["..", "../x", "../../etc/passwd", "/etc/passwd", "a/b", "a\\b", "a\0b", ".x",
             "x" * 65, "", " x", "x.map.map", "x.MAP", "-x", "c:x", "x\n"]


def _encoded(name: str = "m.map") -> persistence.EncodedMap:
    return persistence.encode_snapshot(persistence.snapshot_map(build_map(3, 30, 50)), CALIB,
                                       "rgbd", name=name)


@pytest.fixture
def maps(tmp_path: Path) -> Iterator[MapDirectory]:
    d = MapDirectory(tmp_path / "maps")
    yield d
    d.close()


# --- names ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", BAD_NAMES)
def test_only_short_plain_names_are_map_names(name: str) -> None:
    with pytest.raises(MapFileError, match="invalid map name"):
        map_file_name(name)


def test_names_map_to_files_in_the_directory() -> None:
    assert map_file_name("office") == map_file_name("office.map") == "office.map"
    assert map_file_name("Lab_2-b") == "Lab_2-b.map" and map_file_name("x" * 64)


def test_the_default_directory_follows_xdg(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_map_dir() == tmp_path / "slam" / "maps"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert default_map_dir() == Path.home() / ".local" / "share" / "slam" / "maps"


def test_the_directory_is_created_private(tmp_path: Path) -> None:
    with MapDirectory(tmp_path / "a" / "maps") as d:
        assert d.root.is_dir() and (d.root.stat().st_mode & 0o777) == 0o700


# --- reading: one answer for everything that is not a map --------------------------------
def _special(maps: MapDirectory, tmp_path: Path, kind: str) -> None:
    """Make ``x.map`` in the map directory something other than a regular map file."""
    target = maps.root / "x.map"
    outside = tmp_path / "outside.map"
    outside.write_bytes(b"".join(bytes(c) for c in _encoded().chunks))  # a valid map
    if kind == "dir":
        target.mkdir()
    elif kind == "fifo":
        os.mkfifo(target)
    elif kind == "link_out":
        target.symlink_to(outside)
    elif kind == "link_zero":
        target.symlink_to("/dev/zero")
    elif kind == "link_dir":
        target.symlink_to(tmp_path)
    elif kind == "dangling":
        target.symlink_to(tmp_path / "nothing")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["missing", "dir", "fifo", "link_out", "link_zero",
                                  "link_dir", "dangling"])
def test_anything_but_a_regular_map_file_is_no_map(maps: MapDirectory, tmp_path: Path,
                                                   kind: str) -> None:
    _special(maps, tmp_path, kind)
    with pytest.raises(MapFileError) as err:
        maps.load("x", CALIB, "rgbd")
    assert str(err.value) == "no map named 'x'"  # the same words whatever is there


def test_a_map_larger_than_the_limit_is_not_read(tmp_path: Path) -> None:
    with MapDirectory(tmp_path / "maps", max_bytes=1000) as d:
        (d.root / "big.map").write_bytes(bytes(1001))
        with pytest.raises(MapFileError, match="too large"):
            d.read("big")


def test_a_saved_map_loads_by_name(maps: MapDirectory) -> None:
    size = maps.write("office", _encoded())
    loaded = maps.load("office.map", CALIB, "rgbd")
    assert loaded.map.n_keyframes() == 3 and loaded.info.path == Path("office.map")
    assert (maps.root / "office.map").stat().st_size == size
    assert (maps.root / "office.map").stat().st_mode & 0o777 == 0o600


def test_a_corrupt_map_is_named_by_its_file_name_only(maps: MapDirectory) -> None:
    (maps.root / "bad.map").write_bytes(b"SLAMMAP\0junk")
    with pytest.raises(MapFileError) as err:
        maps.load("bad", CALIB, "rgbd")
    assert "bad.map" in str(err.value) and str(maps.root) not in str(err.value)


# --- writing: never outside the directory ----------------------------------------------
def test_a_save_replaces_a_planted_link_instead_of_following_it(maps: MapDirectory,
                                                                 tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (maps.root / "x.map").symlink_to(victim)
    maps.write("x", _encoded())
    assert victim.read_text() == "precious"
    assert (maps.root / "x.map").is_file() and not (maps.root / "x.map").is_symlink()


def test_a_save_over_a_directory_fails_and_leaves_nothing(maps: MapDirectory) -> None:
    (maps.root / "x.map").mkdir()
    with pytest.raises(OSError):
        maps.write("x", _encoded())
    assert sorted(p.name for p in maps.root.iterdir()) == ["x.map"]


def test_the_number_of_maps_is_capped(tmp_path: Path) -> None:
    with MapDirectory(tmp_path / "maps", max_maps=2) as d:
        d.write("a", _encoded())
        d.write("b", _encoded())
        with pytest.raises(MapFileError, match="holds 2 maps"):
            d.write("c", _encoded())
        d.write("a", _encoded())  # overwriting is fine
        assert [m["name"] for m in d.list()] == ["a", "b"]


def test_listing_shows_regular_map_files_only(maps: MapDirectory, tmp_path: Path) -> None:
    maps.write("office", _encoded())
    (maps.root / "notes.txt").write_text("x")
    (maps.root / ".hidden.map").write_text("x")
    os.mkfifo(maps.root / "fifo.map")
    (maps.root / "dir.map").mkdir()
    (maps.root / "link.map").symlink_to(tmp_path)
    listed = maps.list()
    assert [m["name"] for m in listed] == ["office"]
    assert listed[0]["bytes"] == (maps.root / "office.map").stat().st_size
    assert listed[0]["modified"].endswith("+00:00")


# --- the saver ------------------------------------------------------------------------
class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_one_save_at_a_time_and_at_most_one_per_interval(maps: MapDirectory) -> None:
    clock = _Clock()
    saver = MapSaver(lambda: maps, min_interval_s=10.0, clock=clock)
    gate, entered = threading.Event(), threading.Event()

    def slow_encode(snap: Any, file_name: str) -> Any:
        entered.set()
        assert gate.wait(30)
        return persistence.encode_snapshot(snap, CALIB, "rgbd", name=file_name)

    def snapshot() -> Any:
        return persistence.snapshot_map(build_map(3, 30, 50))

    assert saver.start("a", snapshot, slow_encode) == {"name": "a", "state": "saving"}
    assert entered.wait(30) and saver.status() == {"name": "a", "state": "saving",
                                                    "bytes": None, "seconds": None,
                                                    "error": None}
    with pytest.raises(MapFileError, match="in progress"):
        saver.start("b", snapshot, slow_encode)
    gate.set()
    assert saver.join(30)
    st = saver.status()
    assert st["state"] == "saved" and st["bytes"] == (maps.root / "a.map").stat().st_size
    clock.t += 1  # the interval counts from the end of the last save
    with pytest.raises(MapFileError, match=r"one every 10 s; try again in 9\.0 s"):
        saver.start("b", snapshot, slow_encode)
    clock.t += 9
    saver.start("b.map", snapshot, slow_encode)
    assert saver.join(30) and saver.status()["state"] == "saved"


def test_a_failed_save_is_reported_in_the_status(maps: MapDirectory) -> None:
    saver = MapSaver(lambda: maps, min_interval_s=0.0)
    (maps.root / "x.map").mkdir()
    saver.start("x", lambda: persistence.snapshot_map(Map()),
                lambda snap, name: persistence.encode_snapshot(snap, CALIB, "rgbd", name=name))
    assert saver.join(30)
    st = saver.status()
    assert st["state"] == "failed" and "directory" in st["error"].lower()
    assert sorted(p.name for p in maps.root.iterdir()) == ["x.map"]


def test_service_maps_open_the_directory_at_first_use(tmp_path: Path) -> None:
    maps = ServiceMaps(tmp_path / "later")
    assert not (tmp_path / "later").exists()
    assert maps.list() == {"maps": []} and (tmp_path / "later").is_dir()
    maps.close()
    assert np.isfinite(maps.saver.min_interval_s)


def test_serve_options_for_the_map_directory(tmp_path: Path) -> None:
    import argparse

    from server.cli import build_options, register
    from slam.errors import ConfigError

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True), [])
    base = ["serve", "--source", "zmq:", "--sensor", "rgbd", "--calib",
            str(Path(__file__).resolve().parents[2] / "datasets" / "calib" / "TUM1.yaml")]
    opts, _ = build_options(parser.parse_args([*base, "--map-dir", str(tmp_path / "m"),
                                               "--max-map-bytes", "5000", "--max-maps", "3",
                                               "--map-save-interval", "2.5"]))
    assert (opts.map_dir, opts.max_map_bytes, opts.max_maps, opts.map_save_interval_s) == (
        tmp_path / "m", 5000, 3, 2.5)
    assert (tmp_path / "m").is_dir()
    opts, _ = build_options(parser.parse_args(base))
    assert opts.map_dir is None and opts.map_save_interval_s == 10.0
    (tmp_path / "file").write_text("x")
    for bad in (["--map-dir", str(tmp_path / "file")], ["--max-maps", "0"]):
        with pytest.raises(ConfigError):
            build_options(parser.parse_args([*base, *bad]))

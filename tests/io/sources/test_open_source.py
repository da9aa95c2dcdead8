"""URI dispatch of open_source."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest

import slam.io.sources as sources
from slam.errors import DataSourceError, SensorError
from slam.io.sources import KittiSource, TumSource, open_source, source_schemes


@pytest.mark.parametrize("uri", ["ftp:/data", "/data/rgbd_dataset_freiburg1_rpy", "TUM:x"])
def test_unknown_scheme(uri: str) -> None:
    with pytest.raises(DataSourceError, match=r"unknown source.*tum:"):
        open_source(uri, "rgbd")


def test_empty_argument() -> None:
    with pytest.raises(DataSourceError, match="names no path"):
        open_source("tum:", "rgbd")


@pytest.mark.parametrize("scheme", ["tum", "kitti", "euroc", "images"])
def test_missing_folder(scheme: str, tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match="not found"):
        open_source(f"{scheme}:{tmp_path / 'absent'}", "mono")


def test_dispatch_and_sensor_checks(shared_datasets: Path) -> None:
    tum = shared_datasets / "tum" / "rgbd_dataset_freiburg1_rpy"
    kitti = shared_datasets / "kitti" / "sequences" / "06"
    source = open_source(f"tum:{tum}", "rgbd")
    assert isinstance(source, TumSource) and source.sensors == {"mono", "rgbd"}
    assert source.name == "tum:rgbd_dataset_freiburg1_rpy"
    source = open_source(f"kitti:{kitti}", "stereo")
    assert isinstance(source, KittiSource) and source.sensors == {"mono", "stereo"}
    with pytest.raises(SensorError, match="kitti:06 cannot feed a rgbd sensor"):
        open_source(f"kitti:{kitti}", "rgbd")


def _fake_opener(arg: str, sensor: str, calib: Any, fps: float | None) -> Any:
    return ("fake", arg, sensor, calib, fps)


def test_schemes_declared_by_installed_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    """A scheme of the ``slam.sources`` entry-point group opens through its opener; the
    error for an unknown scheme lists it after the built-in ones."""
    declared = [EntryPoint("fake", f"{__name__}:_fake_opener", sources.SOURCE_PLUGIN_GROUP)]

    def fake_entry_points(*, group: str, name: str | None = None) -> list[EntryPoint]:
        return [ep for ep in declared if ep.group == group and name in (None, ep.name)]

    monkeypatch.setattr(sources, "entry_points", fake_entry_points)
    assert open_source("fake:a?b", "mono", "c.yaml", 5.0) == (
        "fake", "a?b", "mono", "c.yaml", 5.0)
    assert source_schemes()[-1] == "fake" and source_schemes()[0] == "tum"
    with pytest.raises(DataSourceError, match=r"unknown source 'nope:x'; use one of tum:.*fake:"):
        open_source("nope:x", "mono")


def test_synthetic_is_declared_in_the_project_metadata() -> None:
    """``synthetic:`` comes from pyproject's ``slam.sources`` group, not from the runtime
    (which must not import the renderer: tests/test_imports.py)."""
    assert "synthetic" in source_schemes() and "synthetic" not in sources._OPENERS
    source = open_source("synthetic:sideways?n=3", "rgbd")
    assert source.name == "synthetic:sideways" and len(source) == 3

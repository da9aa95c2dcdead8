"""URI dispatch of open_source."""

from __future__ import annotations

from pathlib import Path

import pytest

from slam.errors import DataSourceError, SensorError
from slam.io.sources import KittiSource, TumSource, open_source


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

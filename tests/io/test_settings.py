"""OpenCV YAML settings reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from slam.errors import CalibrationError
from slam.io.settings import read_opencv_yaml

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_reads_orb_slam_settings_with_types() -> None:
    values = read_opencv_yaml(REPO_ROOT / "datasets" / "calib" / "TUM1.yaml")
    assert values["Camera.fx"] == pytest.approx(517.306408, abs=0)
    assert isinstance(values["Camera.fx"], float)
    assert values["Camera.width"] == 640 and isinstance(values["Camera.width"], int)
    assert values["Camera.RGB"] == 1
    assert values["DepthMapFactor"] == 5000.0
    assert values["Camera.k3"] == pytest.approx(1.163314)


def test_matrices_sequences_strings_and_nested_maps(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "%YAML:1.0\n"
        "LEFT.K: !!opencv-matrix\n   rows: 2\n   cols: 3\n   dt: d\n   data: [1, 2, 3, 4, 5, 6.5]\n"
        "Seq: [1, 2.5, -3]\n"
        'Name: "cam"\n'
        "Outer:\n  inner: 7\n  deeper:\n    x: 0.5\n"
    )
    values = read_opencv_yaml(path)
    np.testing.assert_array_equal(values["LEFT.K"], [[1, 2, 3], [4, 5, 6.5]])
    np.testing.assert_array_equal(values["Seq"], [1.0, 2.5, -3.0])
    assert values["Name"] == "cam"
    assert values["Outer.inner"] == 7
    assert values["Outer.deeper.x"] == 0.5


def test_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match=r"not found.*nope.yaml"):
        read_opencv_yaml(tmp_path / "nope.yaml")


def test_directory_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="not a file"):
        read_opencv_yaml(tmp_path)


def test_malformed_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("%YAML:1.0\nCamera.fx: [1, 2\n:::: {\n")
    with pytest.raises(CalibrationError, match=r"bad.yaml"):
        read_opencv_yaml(path)


def test_sequence_of_strings_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("%YAML:1.0\nSeq: [a, b]\n")
    with pytest.raises(CalibrationError, match="Seq"):
        read_opencv_yaml(path)

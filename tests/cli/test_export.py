"""``slam export``: files written, and one-line errors for what users get wrong."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from slam.cli.main import main
from slam.map.persistence import save_map
from tests.dense.helpers import depth_map, open3d_or_skip

V1_FILE = Path(__file__).parents[1] / "map" / "data" / "v1_rgbd.map"


@pytest.fixture
def o3d() -> ModuleType:
    return open3d_or_skip()


def test_points_and_mesh_of_a_run_folder(
    o3d: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    m, calib, _ = depth_map(step=30)
    run = tmp_path / "run"
    run.mkdir()
    save_map(run / "seq.map", m, calib, "rgbd")
    argv = ["-q", "export", "--map", str(run), "--points", str(tmp_path / "p.ply"),
            "--mesh", str(tmp_path / "m.ply"), "--voxel", "0.02", "--no-picture"]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{tmp_path / 'p.ply'}: 0 map points"  # this map has no points
    mesh = o3d.io.read_triangle_mesh(str(tmp_path / "m.ply"))
    assert f"{len(mesh.vertices)} vertices" in out[1] and "from 5 keyframes" in out[1]
    assert len(mesh.triangles) > 1000 and not (tmp_path / "m.png").exists()
    edges = np.asarray(mesh.vertices)[np.asarray(mesh.triangles)]
    lengths = np.linalg.norm(edges[:, 0] - edges[:, 1], axis=1)
    assert np.median(lengths) > 0.012  # 2 cm voxels, not the default 1 cm


def test_a_version_1_map_exports_points_but_explains_why_there_is_no_mesh(
    o3d: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", "--map", str(V1_FILE), "--points", str(tmp_path / "p.ply")]) == 0
    assert len(o3d.io.read_point_cloud(str(tmp_path / "p.ply")).points) > 0
    capsys.readouterr()
    assert main(["export", "--map", str(V1_FILE), "--mesh", str(tmp_path / "m.ply")]) == 10
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("slam: error: map file") and "format version 1" in err
    assert "no keyframe with a depth image" in err and "Traceback" not in err


def test_without_open3d_a_mesh_asks_for_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "open3d", None)
    assert main(["export", "--map", str(V1_FILE), "--mesh", str(tmp_path / "m.ply")]) == 10
    err = capsys.readouterr().err
    assert "--mesh needs Open3D" in err and "pip install 'pyslam-service[dense]'" in err
    # the sparse points need no Open3D (written without outlier removal)
    assert main(["export", "--map", str(V1_FILE), "--points", str(tmp_path / "p.ply")]) == 0
    assert (tmp_path / "p.ply").read_bytes().startswith(b"ply\nformat binary_little_endian")


@pytest.mark.parametrize(("argv", "code", "words"), [
    ([], 2, "nothing to export"),
    (["--points", "P", "--voxel", "-1"], 2, "--voxel must be positive"),
    (["--points", "NO_DIR/p.ply"], 1, "does not exist"),
])
def test_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                     code: int, words: str) -> None:
    argv = [a.replace("NO_DIR", str(tmp_path / "nope")).replace("P", str(tmp_path / "p.ply"))
            if a not in ("--points", "--voxel") else a for a in argv]
    assert main(["export", "--map", str(V1_FILE), *argv]) == code
    assert words in capsys.readouterr().err


def test_a_folder_without_a_map(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--map", str(tmp_path), "--points", str(tmp_path / "p.ply")]) == 8
    assert "expected exactly one .map file" in capsys.readouterr().err

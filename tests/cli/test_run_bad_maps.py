"""``slam run --load-map`` with a damaged or forged map (issue 12, finding 4): exit 8 and
one line naming the file, never a traceback from inside tracking."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.cli.run_fakes import assert_one_error_line, real_run
from tests.map.map_edit import MapParts, edit

SOURCE = "synthetic:sideways?n=12"


@pytest.fixture(scope="module")
def saved_map(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    tmp = tmp_path_factory.mktemp("run")
    assert real_run(tmp, SOURCE, "rgbd", "--save-map", str(tmp / "m.map")) == 0
    return (tmp / "m.map").read_bytes()


def _nan_pose(parts: MapParts) -> None:
    T = parts.array("kf.T_cam_world")
    T[-1, 0, 3] = np.nan
    parts.set_array("kf.T_cam_world", T)


def _levels(parts: MapParts) -> None:
    parts.body["scalars"]["n_levels"] = 10**9


def _length(value: Any) -> Any:
    def fn(parts: MapParts) -> None:
        parts.header["payload"]["length"] = value
    return fn


@pytest.mark.timeout(300)
@pytest.mark.parametrize("forge, fix_length, needle", [
    (_nan_pose, True, "kf.T_cam_world"), (_levels, True, "n_levels"),
    (_length("123"), False, "length"), (_length(None), False, "length"),
    (_length(float("nan")), False, "length"),
])
def test_a_forged_map_exits_8_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], saved_map: bytes, forge: Any,
    fix_length: bool, needle: str,
) -> None:
    path = tmp_path / "forged.map"
    path.write_bytes(edit(saved_map, forge, fix_length=fix_length))
    capsys.readouterr()
    assert real_run(tmp_path, SOURCE, "rgbd", "--load-map", str(path)) == 8
    assert_one_error_line(capsys, str(path), needle)

"""``slam run`` on bad input: exactly one line on stderr and the error's exit code;
and the real system on small folders and the start of fr1_rpy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from slam.cli.main import main
from tests.cli.run_fakes import (
    REPO,
    FakeSource,
    FakeSystem,
    assert_one_error_line,
    fake_error_run,
    ground_truth,
    real_run,
    run_fake,
    use_source,
)


def test_sensor_the_source_cannot_feed(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_system: FakeSystem,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = FakeSource(None, sensors=("mono",))
    assert fake_error_run(tmp_path, monkeypatch, source, "--sensor", "stereo") == 4
    assert_one_error_line(capsys, "stereo")


def test_source_without_calibration(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_system: FakeSystem,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = FakeSource(None, calibration=None)
    assert fake_error_run(tmp_path, monkeypatch, source, "--sensor", "mono") == 2
    assert_one_error_line(capsys, "--calib")


def test_unwritable_output(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_system: FakeSystem,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "file").write_text("")
    use_source(monkeypatch, FakeSource(ground_truth()))
    code = main(
        [
            "-q",
            "run",
            "--source",
            "fake:seq",
            "--sensor",
            "rgbd",
            "--out",
            str(tmp_path / "file" / "traj.txt"),
            "--no-progress",
        ]
    )
    assert code == 1
    assert_one_error_line(capsys, "cannot write trajectory")


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--config", "no/such/config.yaml"], "configuration file not found"),
        (["--set", "features.n_features=5"], "features.n_features"),
        (["--set", "features.n_features"], "KEY=VALUE"),
        (["--max-frames", "0"], "--max-frames"),
    ],
)
def test_configuration_errors(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_system: FakeSystem,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    needle: str,
) -> None:
    source = FakeSource(ground_truth())
    assert fake_error_run(tmp_path, monkeypatch, source, "--sensor", "rgbd", *argv) == 2
    assert_one_error_line(capsys, needle)
    assert not fake_system.calls


def make_tum_folder(root: Path, n: int = 3, corrupt: int | None = None) -> Path:
    """A tiny TUM RGB-D folder (freiburg1 name, so the calibration is inferred)."""
    folder = root / "rgbd_dataset_freiburg1_tiny"
    (folder / "rgb").mkdir(parents=True)
    (folder / "depth").mkdir()
    rng = np.random.default_rng(0)
    rgb, depth, gt = ["# rgb"], ["# depth"], ["# gt"]
    for i in range(n):
        t = 100.0 + i / 30.0
        image = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"rgb/{i}.png"), image)
        cv2.imwrite(str(folder / f"depth/{i}.png"), np.full((480, 640), 7500, np.uint16))
        rgb.append(f"{t:.6f} rgb/{i}.png")
        depth.append(f"{t + 0.001:.6f} depth/{i}.png")
        gt.append(f"{t:.6f} 0 0 {0.01 * i} 0 0 0 1")
    if corrupt is not None:
        (folder / f"rgb/{corrupt}.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage, not an image")
    for name, lines in (("rgb.txt", rgb), ("depth.txt", depth), ("groundtruth.txt", gt)):
        (folder / name).write_text("\n".join(lines) + "\n")
    return folder


@pytest.mark.parametrize(
    ("source", "sensor", "code", "needle"),
    [
        ("tum:{tmp}/missing_folder", "rgbd", 3, "missing_folder"),
        ("nosuchscheme:{tmp}", "rgbd", 3, "nosuchscheme"),
        ("tum:{tum}", "stereo", 4, "stereo"),
        ("kitti:{tum}", "rgbd", 4, "rgbd"),
    ],
)
def test_bad_sources(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    source: str,
    sensor: str,
    code: int,
    needle: str,
) -> None:
    tum = make_tum_folder(tmp_path)
    uri = source.format(tmp=tmp_path, tum=tum)
    assert real_run(tmp_path, uri, sensor) == code
    assert_one_error_line(capsys, needle)


@pytest.mark.parametrize(
    "content",
    [
        b"\x00\xff\xfe binary garbage",
        b"%YAML:1.0\nCamera.fx: 500.0\n",
        b"%YAML:1.0\nCamera: [oops\n",
        # issue 12, finding 7: absurd values were accepted
        b"%YAML:1.0\nCamera.fx: 1.0e308\nCamera.fy: 500.0\nCamera.cx: 320.0\nCamera.cy: 240.0\n"
        b"Camera.bf: 40.0\n",
        b"%YAML:1.0\nCamera.fx: 500.0\nCamera.fy: 500.0\nCamera.cx: 320.0\nCamera.cy: 240.0\n"
        b"Camera.bf: 40.0\nCamera.k1: 1.0e20\nCamera.k2: 0.0\nCamera.p1: 0.0\nCamera.p2: 0.0\n",
    ],
)
def test_malformed_calibration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    tum = make_tum_folder(tmp_path)
    calib = tmp_path / "bad.yaml"
    calib.write_bytes(content)
    assert real_run(tmp_path, f"tum:{tum}", "rgbd", "--calib", str(calib)) == 2
    assert_one_error_line(capsys)


def test_missing_calibration_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tum = make_tum_folder(tmp_path)
    code = real_run(tmp_path, f"tum:{tum}", "rgbd", "--calib", str(tmp_path / "none.yaml"))
    assert code in (2, 3)
    assert_one_error_line(capsys, "none.yaml")


def test_corrupt_image_through_the_real_system(tmp_path: Path) -> None:
    """In a fresh process, so that stderr holds everything a user sees (OpenCV's too)."""
    tum = make_tum_folder(tmp_path, corrupt=0)
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_LOG_LEVEL"}
    argv = [
        "-q",
        "run",
        "--source",
        f"tum:{tum}",
        "--sensor",
        "rgbd",
        "--out",
        str(tmp_path / "t.txt"),
        "--no-progress",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "slam.cli.main", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 3
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("slam: error: ") and "0.png" in lines[0]
    assert "wrote 0 poses" in lines[0] and "Traceback" not in done.stdout


def shared_tum() -> Path:
    for base in (REPO / "datasets" / "sample", REPO.parent / "shared" / "datasets" / "tum"):
        folder = base / "rgbd_dataset_freiburg1_rpy"
        if (folder / "rgb.txt").is_file():
            return folder
    pytest.skip("fr1_rpy not present")


@pytest.mark.slow
def test_real_rgbd_run_on_the_start_of_fr1_rpy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stats_path = tmp_path / "stats.json"
    code = real_run(
        tmp_path, f"tum:{shared_tum()}", "rgbd", "--max-frames", "60", "--stats", str(stats_path)
    )
    assert code == 0
    stats = json.loads(stats_path.read_text())
    assert stats["frames"] == 60
    assert stats["tracked_frames"] >= 57
    assert stats["ate_alignment"] == "se3"
    assert stats["ate_rmse_m"] < 0.05
    assert "ATE" in capsys.readouterr().out


def test_loop_map_and_kidnap_options_reach_the_system(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_system: FakeSystem
) -> None:
    use_source(monkeypatch, FakeSource(ground_truth()))
    argv = ["--no-loop", "--skip-frames", "5:15", "--save-map", str(tmp_path / "m.map")]
    assert run_fake(tmp_path, "rgbd", *argv) == 0
    call = fake_system.calls[0]
    assert call["config"].loop.enabled is False
    assert call["frames"] == 40 - 10
    assert call["save_map"] == tmp_path / "m.map"
    assert call["initial_map"] is None and call["localization_only"] is False


@pytest.mark.parametrize("argv, code, needle", [
    (["--localize"], 2, "--load-map"),
    (["--skip-frames", "9:3"], 3, "9:3"),
    (["--skip-frames", "a:b"], 2, "START:STOP"),
    (["--load-map", "MISSING"], 8, "MISSING"),
    (["--load-map", "GARBAGE"], 8, "GARBAGE"),
])
def test_bad_map_and_kidnap_options_are_one_line_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_system: FakeSystem,
    capsys: pytest.CaptureFixture[str], argv: list[str], code: int, needle: str,
) -> None:
    use_source(monkeypatch, FakeSource(ground_truth()))
    (tmp_path / "GARBAGE").write_bytes(b"not a map at all")
    argv = [str(tmp_path / a) if a in ("MISSING", "GARBAGE") else a for a in argv]
    assert run_fake(tmp_path, "rgbd", *argv) == code
    assert_one_error_line(capsys, needle)
    assert fake_system.calls == []


def test_map_saved_by_one_run_is_localised_in_by_the_next(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = "synthetic:sideways?n=40"
    map_file = tmp_path / "side.map"
    assert real_run(tmp_path, source, "rgbd", "--save-map", str(map_file)) == 0
    assert map_file.is_file()
    stats = tmp_path / "loc.json"
    assert real_run(tmp_path, source, "rgbd", "--load-map", str(map_file), "--localize",
                    "--stats", str(stats)) == 0
    loc = json.loads(stats.read_text())
    assert loc["tracked_frames"] == loc["frames"] == 40
    assert loc["relocalisations"] >= 1 and loc["maps"] == 1
    # The map of another sensor is refused with a clear message.
    code = real_run(tmp_path, source, "stereo", "--load-map", str(map_file))
    assert code == 8
    assert_one_error_line(capsys, "rgbd")

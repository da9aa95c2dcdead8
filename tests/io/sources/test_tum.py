"""TUM RGB-D sequences: association, frames, depth scaling, calibration, ground truth."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from slam.errors import CalibrationError, DataSourceError, ImageError, SensorError
from slam.io.calibration import tum_calibration_for
from slam.io.sources import TumSource, open_source
from slam.io.sources.tum import associate, read_file_list

REPO_ROOT = Path(__file__).resolve().parents[3]
SAMPLE_REL = "datasets/sample/rgbd_dataset_freiburg1_rpy"
SAMPLE = REPO_ROOT / SAMPLE_REL


def _brute_force_associate(a: np.ndarray, b: np.ndarray, max_diff: float) -> list[tuple[int, int]]:
    """The benchmark's rule on the full difference matrix: closest pairs first, once each."""
    diff = np.abs(a[:, None] - b[None, :])
    pairs = []
    while True:
        i, j = np.unravel_index(np.argmin(diff), diff.shape)
        if not diff[i, j] < max_diff:
            break
        pairs.append((int(i), int(j)))
        diff[i, :] = np.inf
        diff[:, j] = np.inf
    return sorted(pairs)


def test_associate_small_example() -> None:
    rgb = np.array([0.0, 0.033, 0.066, 0.100])
    depth = np.array([0.001, 0.030, 0.045, 0.2])
    # 0.066 is 21 ms from 0.045: too far; 0.045 loses 0.033 to 0.030 (3 ms vs 12 ms)
    assert associate(rgb, depth) == [(0, 0), (1, 1)]


def test_associate_matches_brute_force_on_random_stamps() -> None:
    rng = np.random.default_rng(1)
    a = np.cumsum(rng.uniform(0.02, 0.05, 300))
    b = np.sort(a + rng.normal(scale=0.015, size=300))[rng.permutation(300)]
    assert associate(a, b) == _brute_force_associate(a, b, 0.02)


def test_shared_sequence_rgbd(shared_datasets: Path) -> None:
    folder = shared_datasets / "tum" / "rgbd_dataset_freiburg1_rpy"
    source = open_source(f"tum:{folder}", "rgbd")
    rgb_t, rgb_names = read_file_list(folder / "rgb.txt")
    depth_t, depth_names = read_file_list(folder / "depth.txt")
    assert (len(rgb_t), len(depth_t)) == (723, 722)
    pairs = _brute_force_associate(rgb_t, depth_t, 0.02)
    assert len(source) == len(pairs) == 694
    assert source.calibration == tum_calibration_for("freiburg1")
    frame = next(iter(source))
    assert frame.index == 0 and frame.timestamp == 1305031229.528748
    bgr = cv2.imread(str(folder / rgb_names[0]), cv2.IMREAD_COLOR)
    assert bgr is not None
    np.testing.assert_array_equal(frame.color, bgr)
    np.testing.assert_array_equal(frame.image, cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    raw = cv2.imread(str(folder / depth_names[pairs[0][1]]), cv2.IMREAD_UNCHANGED)
    assert raw is not None and raw.dtype == np.uint16
    assert frame.depth_m is not None and frame.depth_m.dtype == np.float32
    np.testing.assert_array_equal(frame.depth_m, raw.astype(np.float32) / np.float32(5000))
    assert np.all(frame.depth_m[raw == 0] == 0)
    assert 0.3 < float(np.median(frame.depth_m[raw > 0])) < 5.0
    assert frame.right is None


def test_shared_sequence_mono_and_ground_truth(shared_datasets: Path) -> None:
    folder = shared_datasets / "tum" / "rgbd_dataset_freiburg1_rpy"
    source = open_source(f"tum:{folder}", "mono")
    assert len(source) == 723
    frame = next(iter(source))
    assert frame.depth_m is None and frame.image.shape == (480, 640)
    gt = source.ground_truth()
    assert gt is not None and len(gt) == 2742
    np.testing.assert_allclose(gt.positions[-1], [1.3295, 0.5568, 1.5139])


def test_wrong_sensors(shared_datasets: Path) -> None:
    folder = shared_datasets / "tum" / "rgbd_dataset_freiburg1_rpy"
    with pytest.raises(SensorError, match="stereo"):
        open_source(f"tum:{folder}", "stereo")
    with pytest.raises(SensorError, match="unknown sensor"):
        open_source(f"tum:{folder}", "lidar")


def _mini_sequence(tmp_path: Path, name: str = "rgbd_dataset_freiburg1_mini", n: int = 3) -> Path:
    """The first ``n`` frames of the bundled sample, copied into ``tmp_path/name``."""
    dst = tmp_path / name
    (dst / "rgb").mkdir(parents=True)
    (dst / "depth").mkdir()
    for list_name in ("rgb.txt", "depth.txt"):
        lines = [ln for ln in (SAMPLE / list_name).read_text().splitlines() if ln[0] != "#"][:n]
        (dst / list_name).write_text("# header\n" + "\n".join(lines) + "\n")
        for line in lines:
            shutil.copyfile(SAMPLE / line.split()[1], dst / line.split()[1])
    return dst


def test_corrupt_image_raises_image_error_naming_it(tmp_path: Path) -> None:
    folder = _mini_sequence(tmp_path)
    second = (folder / "rgb.txt").read_text().splitlines()[2].split()[1]
    (folder / second).write_bytes(b"\xff\xd8 this is not a jpeg " * 20)
    frames = iter(TumSource(folder, "rgbd"))
    assert next(frames).index == 0
    with pytest.raises(ImageError, match=Path(second).name):
        next(frames)


def test_wrong_size_depth_raises_image_error(tmp_path: Path) -> None:
    folder = _mini_sequence(tmp_path)
    first_depth = (folder / "depth.txt").read_text().splitlines()[1].split()[1]
    cv2.imwrite(str(folder / first_depth), np.zeros((240, 320), np.uint16))
    with pytest.raises(ImageError, match=r"320x240, expected 640x480"):
        next(iter(TumSource(folder, "rgbd")))


def test_calibration_needed_when_name_is_unknown(tmp_path: Path) -> None:
    folder = _mini_sequence(tmp_path, name="my_room")
    with pytest.raises(CalibrationError, match="--calib"):
        open_source(f"tum:{folder}", "rgbd")
    calib = REPO_ROOT / "datasets" / "calib" / "TUM3.yaml"
    source = open_source(f"tum:{folder}", "rgbd", calib_path=calib)
    assert source.calibration == tum_calibration_for("freiburg3")
    assert source.ground_truth() is None


def test_depth_factor_defaults_to_5000(tmp_path: Path) -> None:
    folder = _mini_sequence(tmp_path, name="room")
    calib = tmp_path / "c.yaml"
    calib.write_text(
        "%YAML:1.0\nCamera.fx: 500.\nCamera.fy: 500.\nCamera.cx: 320.\nCamera.cy: 240.\n"
    )
    source = open_source(f"tum:{folder}", "rgbd", calib_path=calib)
    assert source.calibration is not None
    assert source.calibration.depth_factor == 5000.0
    assert (source.calibration.camera.width, source.calibration.camera.height) == (640, 480)


def test_missing_lists(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match="not found"):
        open_source(f"tum:{tmp_path / 'nowhere'}", "rgbd")
    folder = _mini_sequence(tmp_path)
    (folder / "depth.txt").unlink()
    assert len(open_source(f"tum:{folder}", "mono")) == 3
    with pytest.raises(DataSourceError, match=r"depth.txt"):
        open_source(f"tum:{folder}", "rgbd")


def test_bundled_sample_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)
    source = open_source(f"tum:{SAMPLE_REL}", "rgbd")
    assert len(source) == 140
    gt = source.ground_truth()
    assert gt is not None
    frames = list(source)
    stamps = np.array([f.timestamp for f in frames])
    # ground truth covers every frame, within one 100 Hz sample
    assert gt.stamps[0] < stamps[0] and gt.stamps[-1] > stamps[-1]
    assert np.max(np.diff(gt.stamps)) < 0.02
    assert all(f.depth_m is not None and f.depth_m.shape == (480, 640) for f in frames)


def test_bundled_sample_is_a_byte_exact_cut(shared_datasets: Path) -> None:
    folder = shared_datasets / "tum" / "rgbd_dataset_freiburg1_rpy"
    for list_name in ("rgb.txt", "depth.txt", "groundtruth.txt"):
        sample_rows = [r for r in (SAMPLE / list_name).read_text().splitlines() if r[0] != "#"]
        full_rows = [r for r in (folder / list_name).read_text().splitlines() if r[0] != "#"]
        start = full_rows.index(sample_rows[0])
        assert full_rows[start : start + len(sample_rows)] == sample_rows
    for rel in (f.split()[1] for f in (SAMPLE / "rgb.txt").read_text().splitlines()[3::45]):
        assert (SAMPLE / rel).read_bytes() == (folder / rel).read_bytes()

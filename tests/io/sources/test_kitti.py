"""KITTI odometry sequences: stereo frames, calibration, timestamps, ground truth."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from evo.tools import file_interface

from slam.errors import DataSourceError, EvaluationError, ImageError, SensorError
from slam.io.sources import KittiSource, open_source


@pytest.fixture
def seq06(shared_datasets: Path) -> Path:
    return shared_datasets / "kitti" / "sequences" / "06"


def _copy_sequence(seq: Path, root: Path, n: int = 3, poses: bool = True) -> Path:
    """The first ``n`` frames of sequence 06 in the official layout under ``root``."""
    dst = root / "sequences" / "06"
    for cam in ("image_0", "image_1"):
        (dst / cam).mkdir(parents=True)
        for i in range(n):
            shutil.copyfile(seq / cam / f"{i:06d}.png", dst / cam / f"{i:06d}.png")
    shutil.copyfile(seq / "calib.txt", dst / "calib.txt")
    shutil.copyfile(seq / "times.txt", dst / "times.txt")
    if poses:
        (root / "poses").mkdir()
        shutil.copyfile(seq.parent.parent / "poses" / "06.txt", root / "poses" / "06.txt")
    return dst


def test_stereo_frames_and_calibration(seq06: Path) -> None:
    source = open_source(f"kitti:{seq06}", "stereo")
    assert isinstance(source, KittiSource) and len(source) == 51
    calib = source.calibration
    assert calib is not None
    assert calib.baseline_m == pytest.approx(0.537, abs=1e-3)
    assert (calib.camera.width, calib.camera.height) == (1226, 370)
    assert calib.fps == 10.0
    times = np.loadtxt(seq06 / "times.txt")
    frames = list(source)
    assert [f.timestamp for f in frames] == times.tolist()
    for k in (0, 50):
        left = cv2.imread(str(seq06 / "image_0" / f"{k:06d}.png"), cv2.IMREAD_GRAYSCALE)
        right = cv2.imread(str(seq06 / "image_1" / f"{k:06d}.png"), cv2.IMREAD_GRAYSCALE)
        np.testing.assert_array_equal(frames[k].image, left)
        np.testing.assert_array_equal(frames[k].right, right)
        assert frames[k].depth_m is None and frames[k].index == k


def test_mono_has_no_right_image(seq06: Path) -> None:
    frame = next(iter(open_source(f"kitti:{seq06}", "mono")))
    assert frame.right is None and frame.image.shape == (370, 1226)


def test_ground_truth_matches_evo(seq06: Path) -> None:
    gt = open_source(f"kitti:{seq06}", "stereo").ground_truth()
    assert gt is not None and len(gt) == 51
    np.testing.assert_array_equal(gt.stamps, np.loadtxt(seq06 / "times.txt"))
    evo_traj = file_interface.read_kitti_poses_file(str(seq06.parent.parent / "poses" / "06.txt"))
    np.testing.assert_allclose(gt.T_world_cam, np.stack(evo_traj.poses_se3), atol=1e-12)


def test_rgbd_is_refused(seq06: Path) -> None:
    with pytest.raises(SensorError, match="rgbd"):
        open_source(f"kitti:{seq06}", "rgbd")


def test_missing_parts(seq06: Path, tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match="not found"):
        open_source(f"kitti:{tmp_path / 'sequences' / '99'}", "stereo")
    seq = _copy_sequence(seq06, tmp_path, poses=False)
    assert open_source(f"kitti:{seq}", "stereo").ground_truth() is None
    (seq / "image_1" / "000002.png").unlink()
    assert len(open_source(f"kitti:{seq}", "mono")) == 3
    with pytest.raises(DataSourceError, match=r"000002.png"):
        open_source(f"kitti:{seq}", "stereo")


def test_more_poses_than_timestamps(seq06: Path, tmp_path: Path) -> None:
    seq = _copy_sequence(seq06, tmp_path)
    (seq / "times.txt").write_text("0.0\n0.1\n0.2\n")
    with pytest.raises(EvaluationError, match="51 poses but 3 timestamps"):
        open_source(f"kitti:{seq}", "stereo").ground_truth()


def test_corrupt_right_image(seq06: Path, tmp_path: Path) -> None:
    seq = _copy_sequence(seq06, tmp_path)
    (seq / "image_1" / "000001.png").write_bytes(b"\x89PNG broken" * 30)
    frames = iter(open_source(f"kitti:{seq}", "stereo"))
    next(frames)
    with pytest.raises(ImageError, match=r"image_1.000001\.png"):
        next(frames)

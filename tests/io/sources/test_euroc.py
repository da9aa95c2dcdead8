"""EuRoC ASL layout on a synthetic rig: rectification, calibration, ground truth frames."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from slam.errors import CalibrationError, SensorError
from slam.io.sources import EurocSource, open_source

SIZE = (752, 480)
K0 = np.array([[450.0, 0, 370.0], [0, 452.0, 245.0], [0, 0, 1]])
D0 = np.array([-0.1, 0.02, 0.0005, -0.0003])
K1 = np.array([[455.0, 0, 365.0], [0, 454.0, 250.0], [0, 0, 1]])
D1 = np.array([-0.09, 0.015, 0.0002, 0.0001])
STAMPS_NS = [1403636579763555584, 1403636579813555456]
XYZ_CAM0 = np.array([[0.3, -0.2, 2.0], [-0.5, 0.3, 4.0], [0.1, 0.15, 1.2]])


def _pose(rotvec: list[float], t: list[float]) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    T[:3, 3] = t
    return T


T_BODY_CAM0 = _pose([0.02, -0.01, 1.5], [-0.0216, -0.0647, 0.0098])
T_CAM0_CAM1 = _pose([0.01, -0.02, 0.005], [0.11, 0.001, -0.002])  # cam1 in cam0's frame
T_BODY_CAM1 = T_BODY_CAM0 @ T_CAM0_CAM1
# body poses in the world: position, quaternion w x y z (EuRoC order)
GT_ROWS = np.array(
    [
        [STAMPS_NS[0], 4.688, -1.786, 0.783, 0.5347, -0.1536, -0.8270, -0.0825],
        [STAMPS_NS[1] - 5_000_000, 4.690, -1.780, 0.785, 0.5360, -0.1520, -0.8260, -0.0830],
    ]
)


def _sensor_yaml(K: np.ndarray, D: np.ndarray, T_BS: np.ndarray) -> str:
    data = ", ".join(f"{v:.12g}" for v in T_BS.ravel())
    return (
        "%YAML:1.0\n# General sensor definitions.\nsensor_type: camera\n"
        f"T_BS:\n  cols: 4\n  rows: 4\n  data: [{data}]\n"
        f"rate_hz: 20\nresolution: [{SIZE[0]}, {SIZE[1]}]\ncamera_model: pinhole\n"
        f"intrinsics: [{K[0, 0]}, {K[1, 1]}, {K[0, 2]}, {K[1, 2]}] #fu, fv, cu, cv\n"
        "distortion_model: radial-tangential\n"
        f"distortion_coefficients: [{', '.join(str(d) for d in D)}]\n"
    )


def _render(K: np.ndarray, D: np.ndarray, xyz_cam: np.ndarray) -> np.ndarray:
    """Gaussian blobs (sigma 2.5 px) at the distorted projections of ``xyz_cam``."""
    uv, _ = cv2.projectPoints(xyz_cam.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), K, D)
    u, v = np.meshgrid(np.arange(SIZE[0]), np.arange(SIZE[1]))
    img = np.zeros((SIZE[1], SIZE[0]))
    for x, y in uv.reshape(-1, 2):
        img += 250.0 * np.exp(-((u - x) ** 2 + (v - y) ** 2) / (2 * 2.5**2))
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def _write_asl(root: Path) -> None:
    xyz_cam1 = (np.linalg.inv(T_CAM0_CAM1) @ np.c_[XYZ_CAM0, np.ones(3)].T).T[:, :3]
    for cam, K, D, T_BS, xyz in (
        ("cam0", K0, D0, T_BODY_CAM0, XYZ_CAM0),
        ("cam1", K1, D1, T_BODY_CAM1, xyz_cam1),
    ):
        folder = root / cam
        (folder / "data").mkdir(parents=True)
        (folder / "sensor.yaml").write_text(_sensor_yaml(K, D, T_BS))
        lines = ["#timestamp [ns],filename"]
        for ns in STAMPS_NS:
            cv2.imwrite(str(folder / "data" / f"{ns}.png"), _render(K, D, xyz))
            lines.append(f"{ns},{ns}.png")
        (folder / "data.csv").write_text("\n".join(lines) + "\n")
    gt_dir = root / "state_groundtruth_estimate0"
    gt_dir.mkdir()
    extra = ",0.1,0.2,0.3,-0.002,0.02,0.07,-0.02,0.12,0.08"
    rows = [f"{int(r[0])}," + ",".join(f"{v:.6f}" for v in r[1:]) + extra for r in GT_ROWS]
    (gt_dir / "data.csv").write_text("#timestamp, p_RS_R_x [m], ...\n" + "\n".join(rows) + "\n")


@pytest.fixture
def euroc_dir(tmp_path: Path) -> Path:
    _write_asl(tmp_path / "MH_fake" / "mav0")
    return tmp_path / "MH_fake"


def _blob_centres(img: np.ndarray) -> np.ndarray:
    """Intensity-weighted centres (N, 2) of the blobs, sorted by row."""
    n, labels = cv2.connectedComponents((img > 40).astype(np.uint8))
    v, u = np.mgrid[: img.shape[0], : img.shape[1]]
    w = img.astype(np.float64)
    centres = []
    for k in range(1, n):
        mask = labels == k
        centres.append([np.sum(u[mask] * w[mask]), np.sum(v[mask] * w[mask])] / w[mask].sum())
    return np.array(sorted(centres, key=lambda c: c[1]))


def _body_to_cam0(row: np.ndarray) -> np.ndarray:
    T_world_body = np.eye(4)
    w, x, y, z = row[4:8]
    T_world_body[:3, :3] = Rotation.from_quat([x, y, z, w]).as_matrix()
    T_world_body[:3, 3] = row[1:4]
    return T_world_body @ T_BODY_CAM0


def test_mono_raw_images_calibration_and_ground_truth(euroc_dir: Path) -> None:
    source = open_source(f"euroc:{euroc_dir}", "mono")
    assert isinstance(source, EurocSource) and len(source) == 2
    calib = source.calibration
    assert calib is not None and calib.baseline_m is None and calib.fps == 20.0
    cam = calib.camera
    np.testing.assert_allclose(cam.K, K0)
    assert cam.dist == (*D0.tolist(), 0.0) and (cam.width, cam.height) == SIZE
    frames = list(source)
    assert [f.timestamp for f in frames] == [ns * 1e-9 for ns in STAMPS_NS]
    written = cv2.imread(str(euroc_dir / "mav0" / "cam0" / "data" / f"{STAMPS_NS[0]}.png"), 0)
    np.testing.assert_array_equal(frames[0].image, written)
    assert frames[0].right is None
    gt = source.ground_truth()
    assert gt is not None
    np.testing.assert_allclose(gt.stamps, GT_ROWS[:, 0] * 1e-9)
    for k in range(2):
        np.testing.assert_allclose(gt.T_world_cam[k], _body_to_cam0(GT_ROWS[k]), atol=1e-5)


def test_stereo_rectification_geometry(euroc_dir: Path) -> None:
    source = open_source(f"euroc:{euroc_dir}", "stereo")
    calib = source.calibration
    assert calib is not None and calib.baseline_m is not None
    assert calib.camera.dist == (0.0,) * 5
    assert calib.baseline_m == pytest.approx(np.linalg.norm(T_CAM0_CAM1[:3, 3]), rel=1e-9)
    frame = next(iter(source))
    assert frame.right is not None and frame.image.shape == (SIZE[1], SIZE[0])
    left, right = _blob_centres(frame.image), _blob_centres(frame.right)
    assert len(left) == len(right) == 3
    # rectified: same rows, and depth from disparity recovers the points
    np.testing.assert_allclose(left[:, 1], right[:, 1], atol=0.3)
    depth = calib.camera.fx * calib.baseline_m / (left[:, 0] - right[:, 0])
    xyz_rect = calib.camera.unproject(left, depth)
    order = np.argsort(_project_rows(XYZ_CAM0))
    np.testing.assert_allclose(
        np.linalg.norm(xyz_rect, axis=1), np.linalg.norm(XYZ_CAM0[order], axis=1), rtol=0.01
    )
    # the ground truth is the rectified left camera: it rotates xyz_rect back onto cam0
    gt_rect = source.ground_truth()
    gt_mono = open_source(f"euroc:{euroc_dir}", "mono").ground_truth()
    assert gt_rect is not None and gt_mono is not None
    T_cam0_rect = np.linalg.inv(gt_mono.T_world_cam[0]) @ gt_rect.T_world_cam[0]
    np.testing.assert_allclose(T_cam0_rect[:3, 3], 0.0, atol=1e-9)
    xyz_cam0 = xyz_rect @ T_cam0_rect[:3, :3].T
    np.testing.assert_allclose(xyz_cam0, XYZ_CAM0[order], atol=0.01 * 4.0)
    np.testing.assert_allclose(xyz_cam0, XYZ_CAM0[order], rtol=0.02)


def _project_rows(xyz: np.ndarray) -> np.ndarray:
    return K0[1, 1] * xyz[:, 1] / xyz[:, 2] + K0[1, 2]


def test_plain_cam_layout_and_wrong_sensor(euroc_dir: Path) -> None:
    assert len(open_source(f"euroc:{euroc_dir / 'mav0'}", "stereo")) == 2
    with pytest.raises(SensorError, match="rgbd"):
        open_source(f"euroc:{euroc_dir}", "rgbd")


def test_missing_right_frame_drops_the_pair(euroc_dir: Path) -> None:
    csv = euroc_dir / "mav0" / "cam1" / "data.csv"
    csv.write_text("\n".join(csv.read_text().splitlines()[:2]) + "\n")
    source = open_source(f"euroc:{euroc_dir}", "stereo")
    assert len(source) == 1 and next(iter(source)).timestamp == STAMPS_NS[0] * 1e-9


def test_bad_sensor_yaml(euroc_dir: Path) -> None:
    yaml_path = euroc_dir / "mav0" / "cam0" / "sensor.yaml"
    yaml_path.write_text(yaml_path.read_text().replace("intrinsics: [450.0,", "intrinsics: ["))
    with pytest.raises(CalibrationError, match=r"sensor.yaml: intrinsics must hold 4"):
        open_source(f"euroc:{euroc_dir}", "mono")


def test_out_of_range_sensor_yaml_names_file_and_field(euroc_dir: Path) -> None:
    """Issue 12, finding 7: absurd values are refused like every other calibration's."""
    yaml_path = euroc_dir / "mav0" / "cam0" / "sensor.yaml"
    text = yaml_path.read_text().replace("intrinsics: [450.0,", "intrinsics: [1e308,")
    yaml_path.write_text(text)
    with pytest.raises(CalibrationError, match=r"sensor\.yaml: fx = 1e\+308 is out of range"):
        open_source(f"euroc:{euroc_dir}", "mono")

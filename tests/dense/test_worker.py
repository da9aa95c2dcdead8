"""``slam run --dense``: fusion in a background process, re-integration after corrections."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from slam.config import load_config
from slam.dense import Open3DMissingError
from slam.dense.worker import DenseOptions, DenseWorker, NullDense, start_dense
from slam.errors import SensorError
from slam.geometry.alignment import umeyama
from slam.geometry.lie import make_pose, se3_inv, so3_exp
from slam.map.map import Map
from slam.replay import run_offline
from slam.synthetic.accuracy import surface_error
from slam.synthetic.source import make_synthetic_source
from tests.dense.helpers import depth_map

log = logging.getLogger(__name__)


def _mesh_error(o3d: ModuleType, path: Path, quads: tuple, G: np.ndarray | None = None
                ) -> object:
    """Surface error of the mesh file's vertices (mapped by ``G`` (4x4) first)."""
    v = np.asarray(o3d.io.read_triangle_mesh(str(path)).vertices)[::4]
    if G is not None:
        v = v @ G[:3, :3].T + G[:3, 3]
    return surface_error(v, quads)


def test_keyframes_are_fused_in_the_background_and_pictured(
    o3d: ModuleType, tmp_path: Path
) -> None:
    m, calib, scene = depth_map(step=30)
    worker = DenseWorker(m, calib, "rgbd", DenseOptions(tmp_path / "m.ply"))

    def slam_calls() -> None:
        for kf_id in list(m.keyframes)[:3]:  # already queued (the map's own): no-ops
            worker.submit(kf_id)
        worker.on_corrected()

    caller = threading.Thread(target=slam_calls, daemon=True)
    child = worker._proc.pid
    assert child is not None
    os.kill(child, signal.SIGSTOP)  # the child takes nothing now ...
    try:
        caller.start()
        caller.join(30)
        assert not caller.is_alive()  # ... and SLAM's calls never wait for it
    finally:
        os.kill(child, signal.SIGCONT)
    result = worker.finish()
    assert result is not None and result.n_keyframes == 5 and result.rebuilds == 0
    err = _mesh_error(o3d, tmp_path / "m.ply", scene.quads)
    log.warning("dense worker, true poses: %s; %.0f ms per keyframe", err,
                result.integrate_ms_median)
    assert err.median_m <= 0.01 and err.p95_m <= 0.03  # type: ignore[attr-defined]
    assert result.png_path == tmp_path / "m.png" and result.png_path.stat().st_size > 10_000
    assert not worker._proc.is_alive()


@pytest.mark.parametrize("corrected", [True, False])
def test_a_correction_re_integrates_with_the_new_poses(
    o3d: ModuleType, tmp_path: Path, corrected: bool
) -> None:
    """After the fused keyframes' poses change (the whole map moved by G), on_corrected
    rebuilds the volume: the mesh follows, and without it the mesh stays put. (The final
    re-check is switched off here by a huge tolerance.)"""
    m, calib, scene = depth_map(step=30)
    options = DenseOptions(tmp_path / "m.ply", picture=False, final_tol_m=100.0,
                           final_tol_deg=180.0)
    worker = DenseWorker(m, calib, "rgbd", options)
    assert worker.flush()  # the keyframes went to the child with their first poses
    G = make_pose(so3_exp(np.array([0.0, 0.0, 0.05])), np.array([0.1, -0.05, 0.02]))
    with m.lock:
        for kf in m.keyframes.values():
            kf.T_cam_world = kf.T_cam_world @ se3_inv(G)  # world' = G world
    if corrected:
        worker.on_corrected()
    result = worker.finish()
    assert result is not None and result.rebuilds == int(corrected)
    err = _mesh_error(o3d, tmp_path / "m.ply", scene.quads, np.asarray(se3_inv(G)))
    assert (err.median_m <= 0.01) == corrected, err  # type: ignore[attr-defined]


def test_the_final_poses_are_used(o3d: ModuleType, tmp_path: Path) -> None:
    """Keyframes that moved after they were fused (bundle adjustment) are re-fused at
    the end when they moved by more than the final tolerance."""
    m, calib, scene = depth_map(step=30)
    worker = DenseWorker(m, calib, "rgbd", DenseOptions(tmp_path / "m.ply", picture=False))
    assert worker.flush()
    G = make_pose(np.eye(3), np.array([0.0, 0.0, 0.03]))
    with m.lock:
        for kf in m.keyframes.values():
            kf.T_cam_world = kf.T_cam_world @ se3_inv(G)
    result = worker.finish()
    assert result is not None and result.rebuilds == 1
    err = _mesh_error(o3d, tmp_path / "m.ply", scene.quads, np.asarray(se3_inv(G)))
    assert err.median_m <= 0.01, err  # type: ignore[attr-defined]


def test_slam_poses_give_a_mesh_on_the_true_surfaces(o3d: ModuleType, tmp_path: Path) -> None:
    """Acceptance: ``run_offline(dense=...)`` on the synthetic RGB-D sequence; the mesh,
    brought into the ground-truth frame by the trajectory alignment, lies within 1 cm
    (median) and 3 cm (p95) of the true surfaces."""
    src = make_synthetic_source("forward", "rgbd", n_frames=90)
    assert src.calibration is not None
    result = run_offline(src, "rgbd", src.calibration, load_config(None, {}), progress=False,
                         dense=DenseOptions(tmp_path / "slam.ply", picture=False))
    assert result.dense is not None and result.dense.n_keyframes >= 4
    assert result.stats["dense_keyframes"] == result.dense.n_keyframes
    gt = src.ground_truth()
    idx = np.searchsorted(gt.stamps, result.trajectory.stamps)
    R, t, _ = umeyama(result.trajectory.positions, gt.positions[idx], with_scale=False)
    G = np.eye(4)
    G[:3, :3], G[:3, 3] = R, t
    err = _mesh_error(o3d, tmp_path / "slam.ply", src.scene.quads, G)
    log.warning("dense mesh from a SLAM run (synthetic forward RGB-D, %d keyframes): %s",
                result.dense.n_keyframes, err)
    assert err.median_m <= 0.01 and err.p95_m <= 0.03  # type: ignore[attr-defined]


def test_dense_needs_depth_and_a_missing_open3d_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SensorError, match="rgbd or stereo"):
        DenseWorker(Map(), depth_map(step=30)[1], "mono", DenseOptions(tmp_path / "m.ply"))
    assert isinstance(start_dense(Map(), depth_map(step=30)[1], "rgbd", None), NullDense)
    assert NullDense().finish() is None
    fake = tmp_path / "fake" / "open3d"  # an Open3D whose import fails as without libusb
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        'raise ImportError("libusb-1.0.so.0: cannot open shared object file")\n')
    monkeypatch.syspath_prepend(str(fake.parent))  # spawn gives the child our sys.path
    with pytest.raises(Open3DMissingError, match=r"libusb-1\.0\.so\.0.*apt-get install libusb"):
        DenseWorker(Map(), depth_map(step=30)[1], "rgbd", DenseOptions(tmp_path / "m.ply"))

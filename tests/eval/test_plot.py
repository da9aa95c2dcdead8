"""The trajectory figure: a real PNG with the expected size and content, headless."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from slam.errors import SlamError
from slam.eval.metrics import ate
from slam.eval.plot import build_figure, plane_axes, plot_trajectories
from slam.geometry.lie import se3_exp
from slam.io.types import Trajectory


def circle(n: int = 50, noise: float = 0.0) -> Trajectory:
    """A circle of radius 2 m in the x-z plane, 0.2 m wiggle along y."""
    a = np.linspace(0, 2 * np.pi, n)
    poses = np.stack([se3_exp(np.array([0, 0, 0, 0, ai, 0])) for ai in a])
    poses[:, :3, 3] = np.c_[2 * np.cos(a), 0.1 * np.sin(3 * a), 2 * np.sin(a)]
    poses[:, :3, 3] += np.random.default_rng(0).normal(0, noise, (n, 3)) if noise else 0.0
    return Trajectory(np.arange(n) / 10.0, poses)


def test_plane_axes_prefers_x_z_else_the_two_largest_extents() -> None:
    assert plane_axes(circle().positions) == (0, 2)
    assert plane_axes(np.array([[0, 0, 0], [1.0, 1.2, 60.0]])) == (0, 2)  # KITTI-like clip
    assert plane_axes(np.array([[0, 0, 0], [2.0, 2.0, 0.3]])) == (0, 1)  # z-up world
    assert plane_axes(np.array([[0, 0, 0], [0, 5, 1], [0.1, 2, 0]], float)) == (1, 2)


def test_plot_writes_a_png_of_the_figure_size(tmp_path: Path) -> None:
    gt, est = circle(), circle(noise=0.05)
    result = ate(gt, est, "se3")
    path = plot_trajectories(
        tmp_path / "sub" / "traj.png",
        gt,
        result.est_aligned,
        "circle",
        markers={"keyframes": est.stamps[::10]},
        errors_m=result.errors_m,
    )
    image = cv2.imread(str(path))
    assert image is not None
    assert image.shape == (700, 1300, 3)  # 13 x 7 inches at 100 dpi
    assert image.std() > 10  # not a blank canvas


def test_figure_has_top_view_and_three_time_axes() -> None:
    gt = circle()
    fig = build_figure(gt, gt, "t", errors_m=np.zeros(len(gt)))
    labels = [
        (ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes if ax.get_xlabel() or ax.get_ylabel()
    ]
    assert ("x [m]", "z [m]") in labels
    assert [lab[1] for lab in labels[-3:]] == ["x [m]", "y [m]", "z [m]"]
    assert any(ax.get_ylabel() == "ATE [m]" for ax in fig.axes)  # the colour bar


def test_plot_without_ground_truth(tmp_path: Path) -> None:
    path = plot_trajectories(tmp_path / "est.png", None, circle(), "estimate only")
    assert path.stat().st_size > 1000


def test_bad_inputs_raise(tmp_path: Path) -> None:
    est = circle()
    with pytest.raises(ValueError, match="errors for"):
        plot_trajectories(tmp_path / "a.png", None, est, "t", errors_m=np.zeros(3))
    with pytest.raises(SlamError, match="empty"):
        plot_trajectories(
            tmp_path / "b.png", None, Trajectory(np.zeros(0), np.zeros((0, 4, 4))), "t"
        )
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(SlamError, match="cannot write plot"):
        plot_trajectories(tmp_path / "file" / "c.png", None, est, "t")

"""Headless trajectory figures (matplotlib's Agg canvas, no display, no pyplot state).

One figure: on the left the top view (x-z, or the two world axes along which the
trajectory extends most, see :func:`plane_axes`) with the estimate coloured by its
ATE, on the right x, y and z against time.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, NDArray

from slam.errors import SlamError
from slam.io.types import Trajectory

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

AXIS_NAMES = ("x", "y", "z")


def plane_axes(positions: NDArray[np.float64]) -> tuple[int, int]:
    """The two axes (ascending) of the top view of ``positions`` (N, 3).

    x-z, the ground plane of a camera-like world (y down), unless the trajectory
    extends along y more than twice as far as along x or z: then the two axes of
    largest extent (e.g. x-y for a z-up motion-capture world).
    """
    extent = np.ptp(positions, axis=0) if len(positions) else np.zeros(3)
    if extent[1] <= 2.0 * min(extent[0], extent[2]):
        return (0, 2)
    first, second = np.argsort(-extent, kind="stable")[:2]
    return (int(min(first, second)), int(max(first, second)))


def _t0(*trajs: Trajectory | None) -> float:
    return min(float(t.stamps.min()) for t in trajs if t is not None and len(t))


def _draw_top_view(
    ax: Axes,
    gt: Trajectory | None,
    est: Trajectory,
    axes: tuple[int, int],
    errors_m: NDArray[np.float64] | None,
) -> None:
    from matplotlib.collections import LineCollection

    i, j = axes
    if gt is not None and len(gt):
        ax.plot(
            gt.positions[:, i], gt.positions[:, j], "--", color="0.4", lw=1.2, label="ground truth"
        )
    xy = est.positions[:, [i, j]]
    if errors_m is not None and len(xy) > 1:
        segments = np.stack([xy[:-1], xy[1:]], axis=1)
        lines = LineCollection(list(segments), cmap="viridis", lw=2.0, label="estimate")
        lines.set_array(0.5 * (errors_m[:-1] + errors_m[1:]))
        ax.add_collection(lines)
        ax.figure.colorbar(lines, ax=ax, label="ATE [m]", shrink=0.8)
    else:
        ax.plot(xy[:, 0], xy[:, 1], "-", color="tab:blue", lw=1.5, label="estimate")
    ax.plot(*xy[0], "o", color="tab:green", label="start")
    ax.set_xlabel(f"{AXIS_NAMES[i]} [m]")
    ax.set_ylabel(f"{AXIS_NAMES[j]} [m]")
    ax.set_aspect("equal", adjustable="datalim")
    ax.autoscale_view()
    ax.grid(True, alpha=0.3)


def _draw_axes_vs_time(
    axs: list[Axes],
    gt: Trajectory | None,
    est: Trajectory,
    t0: float,
    markers: Mapping[str, NDArray[np.float64]],
) -> None:
    for k, ax in enumerate(axs):
        if gt is not None and len(gt):
            ax.plot(gt.stamps - t0, gt.positions[:, k], "--", color="0.4", lw=1.0)
        ax.plot(est.stamps - t0, est.positions[:, k], "-", color="tab:blue", lw=1.2)
        for n, (label, stamps) in enumerate(markers.items()):
            for m, t in enumerate(stamps):
                ax.axvline(
                    t - t0,
                    color=f"C{n + 3}",
                    lw=0.6,
                    alpha=0.6,
                    label=label if (k == 0 and m == 0) else None,
                )
        ax.set_ylabel(f"{AXIS_NAMES[k]} [m]")
        ax.grid(True, alpha=0.3)
    axs[-1].set_xlabel("t [s]")
    if markers:
        axs[0].legend(loc="best", fontsize="small")


def _draw_markers_top(
    ax: Axes, est: Trajectory, axes: tuple[int, int], markers: Mapping[str, NDArray[np.float64]]
) -> None:
    for n, (label, stamps) in enumerate(markers.items()):
        if len(stamps) == 0 or len(est) == 0:
            continue
        idx = np.abs(est.stamps[None, :] - stamps[:, None]).argmin(axis=1)
        pts = est.positions[idx]
        ax.scatter(pts[:, axes[0]], pts[:, axes[1]], s=14, color=f"C{n + 3}", label=label, zorder=3)


def build_figure(
    gt: Trajectory | None,
    est_aligned: Trajectory,
    title: str,
    markers: Mapping[str, ArrayLike] | None = None,
    errors_m: ArrayLike | None = None,
) -> Figure:
    """The figure described in the module docstring (not yet saved)."""
    from matplotlib.figure import Figure

    if len(est_aligned) == 0:
        raise SlamError("cannot plot an empty trajectory")
    errors = None if errors_m is None else np.asarray(errors_m, dtype=np.float64).reshape(-1)
    if errors is not None and len(errors) != len(est_aligned):
        raise ValueError(f"{len(errors)} errors for {len(est_aligned)} poses")
    marks = {k: np.asarray(v, dtype=np.float64).reshape(-1) for k, v in (markers or {}).items()}
    ref = gt.positions if gt is not None and len(gt) else est_aligned.positions
    axes = plane_axes(ref)
    fig = Figure(figsize=(13, 7), layout="constrained")
    grid = fig.add_gridspec(3, 2, width_ratios=[1.4, 1.0])
    top = fig.add_subplot(grid[:, 0])
    _draw_top_view(top, gt, est_aligned, axes, errors)
    _draw_markers_top(top, est_aligned, axes, marks)
    top.legend(loc="best", fontsize="small")
    side = [fig.add_subplot(grid[k, 1]) for k in range(3)]
    _draw_axes_vs_time(side, gt, est_aligned, _t0(gt, est_aligned), marks)
    fig.suptitle(title)
    return fig


def plot_trajectories(
    path_png: str | Path,
    gt: Trajectory | None,
    est_aligned: Trajectory,
    title: str,
    markers: Mapping[str, ArrayLike] | None = None,
    errors_m: ArrayLike | None = None,
) -> Path:
    """Draw ground truth (may be None) and the aligned estimate into a PNG; return its path.

    ``est_aligned`` must already be in the ground-truth world frame (see
    :func:`slam.eval.metrics.ate`); ``errors_m`` (len(est_aligned),) colours it by
    ATE in metres. ``markers`` maps a label to timestamps (K,) seconds (e.g.
    keyframes, tracking lost), drawn as vertical lines and as points on the estimate.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = build_figure(gt, est_aligned, title, markers, errors_m)
    path = Path(path_png)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        FigureCanvasAgg(fig).print_png(str(path))
    except OSError as exc:
        raise SlamError(f"cannot write plot {path}: {exc.strerror or exc}") from exc
    log.info("wrote plot %s", path)
    return path

"""Trajectory error metrics computed with evo.

:func:`ate` is the absolute trajectory error (translation part, metres) after an
SE(3), Sim(3), origin or no alignment; :func:`rpe` the relative pose error over a
fixed frame or distance step. Both associate poses by nearest timestamp (evo's
``associate_trajectories``) and raise :class:`EvaluationError` when the
trajectories do not overlap or too few poses match.

Poses go to evo as 4x4 matrices (``poses_se3``), so no quaternion is converted
here; evo's ``align()`` changes a trajectory in place, so we align a copy.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import NDArray

from slam.errors import EvaluationError
from slam.io.types import Trajectory

if TYPE_CHECKING:
    from evo.core.trajectory import PoseTrajectory3D

log = logging.getLogger(__name__)

Alignment = Literal["se3", "sim3", "origin", "none"]
ALIGNMENTS: tuple[str, ...] = ("se3", "sim3", "origin", "none")
MIN_MATCHES_ALIGNED = 3  # Umeyama needs three non-collinear points

Array = NDArray[np.float64]


@dataclass(frozen=True)
class ErrorStats:
    """Summary of a set of errors (unit given by the metric)."""

    rmse: float
    mean: float
    median: float
    max: float
    n: int


@dataclass(frozen=True)
class AteResult:
    """Absolute trajectory error, translation part, in metres.

    ``T_align`` (4x4) maps estimate-world points into ground-truth-world points:
    ``xyz_gt = T_align[:3, :3] @ xyz_est + T_align[:3, 3]``, where the upper-left
    block is ``scale * R``. ``gt`` and ``est_aligned`` hold the ``n_matched``
    associated poses; ``errors_m`` (n_matched,) the per-pose position errors.
    """

    rmse_m: float
    mean_m: float
    median_m: float
    max_m: float
    n_matched: int
    scale: float
    T_align: Array
    alignment: str
    gt: Trajectory
    est_aligned: Trajectory
    errors_m: Array


@dataclass(frozen=True)
class RpeResult:
    """Relative pose error over ``delta`` ``delta_unit`` steps.

    ``unit`` is ``"m"`` for the translation part, ``"deg"`` for the rotation angle.
    """

    stats: ErrorStats
    delta: float
    delta_unit: str
    unit: str
    errors: Array


def _to_evo(traj: Trajectory, name: str) -> PoseTrajectory3D:
    from evo.core.trajectory import PoseTrajectory3D

    if len(traj) == 0:
        raise EvaluationError(f"the {name} trajectory is empty")
    return PoseTrajectory3D(
        timestamps=traj.stamps.copy(), poses_se3=list(traj.T_world_cam.copy()), name=name
    )


def _from_evo(traj: PoseTrajectory3D) -> Trajectory:
    return Trajectory(np.asarray(traj.timestamps), np.stack(traj.poses_se3))


def _associate(
    gt: Trajectory, est: Trajectory, max_diff_s: float, min_matches: int
) -> tuple[PoseTrajectory3D, PoseTrajectory3D]:
    """Associate by nearest timestamp; return (gt, est) evo trajectories of equal length."""
    from evo import EvoException
    from evo.core.sync import associate_trajectories

    evo_gt, evo_est = _to_evo(gt, "ground truth"), _to_evo(est, "estimate")
    try:
        evo_gt, evo_est = associate_trajectories(evo_gt, evo_est, max_diff=max_diff_s)
    except EvoException as exc:
        raise EvaluationError(
            f"no pose of the estimate ({len(est)} poses, "
            f"{_span(est)}) matches the ground truth ({_span(gt)}) within {max_diff_s} s"
        ) from exc
    if evo_est.num_poses < min_matches:
        raise EvaluationError(
            f"only {evo_est.num_poses} poses match the ground truth within {max_diff_s} s "
            f"(need at least {min_matches})"
        )
    return evo_gt, evo_est


def _span(traj: Trajectory) -> str:
    return f"t = {traj.stamps.min():.3f} .. {traj.stamps.max():.3f} s"


def _align(
    evo_est: PoseTrajectory3D, evo_gt: PoseTrajectory3D, align: str
) -> tuple[PoseTrajectory3D, Array, float]:
    """Return an aligned copy of ``evo_est``, the similarity (4x4) used and its scale."""
    from evo import EvoException

    if align not in ALIGNMENTS:
        raise EvaluationError(f"unknown alignment {align!r}; choose one of {ALIGNMENTS}")
    aligned = copy.deepcopy(evo_est)  # evo aligns in place
    T_align = np.eye(4)
    scale = 1.0
    try:
        if align in ("se3", "sim3"):
            R, t, s = aligned.align(evo_gt, correct_scale=(align == "sim3"))
            scale = float(s)
            T_align[:3, :3] = scale * np.asarray(R)
            T_align[:3, 3] = np.asarray(t)
        elif align == "origin":
            T_align = np.asarray(aligned.align_origin(evo_gt), dtype=np.float64)
    except EvoException as exc:
        raise EvaluationError(f"{align} alignment failed: {exc}") from exc
    return aligned, T_align, scale


def _stats(errors: Array) -> ErrorStats:
    return ErrorStats(
        rmse=float(np.sqrt(np.mean(errors**2))),
        mean=float(np.mean(errors)),
        median=float(np.median(errors)),
        max=float(np.max(errors)),
        n=len(errors),
    )


def ate(
    gt: Trajectory, est: Trajectory, align: Alignment = "se3", max_diff_s: float = 0.01
) -> AteResult:
    """Absolute trajectory error of ``est`` against ``gt`` (both world-from-camera).

    ``align``: ``"se3"`` (stereo, RGB-D), ``"sim3"`` (monocular: also recovers the
    scale), ``"origin"`` (first poses made equal) or ``"none"``. Poses are associated
    by nearest timestamp within ``max_diff_s`` seconds.
    """
    from evo import EvoException
    from evo.core import metrics

    min_matches = MIN_MATCHES_ALIGNED if align in ("se3", "sim3") else 1
    evo_gt, evo_est = _associate(gt, est, max_diff_s, min_matches)
    aligned, T_align, scale = _align(evo_est, evo_gt, align)
    ape = metrics.APE(metrics.PoseRelation.translation_part)
    try:
        ape.process_data((evo_gt, aligned))
    except EvoException as exc:
        raise EvaluationError(f"APE failed: {exc}") from exc
    errors = np.asarray(ape.error, dtype=np.float64)
    s = _stats(errors)
    log.debug("ATE %s: rmse %.4f m over %d poses, scale %.4f", align, s.rmse, s.n, scale)
    return AteResult(
        rmse_m=s.rmse,
        mean_m=s.mean,
        median_m=s.median,
        max_m=s.max,
        n_matched=s.n,
        scale=scale,
        T_align=T_align,
        alignment=align,
        gt=_from_evo(evo_gt),
        est_aligned=_from_evo(aligned),
        errors_m=errors,
    )


def rpe(
    gt: Trajectory,
    est: Trajectory,
    *,
    delta: float = 1,
    delta_unit: Literal["frames", "m"] = "frames",
    relation: Literal["translation", "rotation"] = "translation",
    align: Alignment = "none",
    max_diff_s: float = 0.01,
) -> RpeResult:
    """Relative pose error between pose pairs ``delta`` frames (or metres) apart.

    ``relation="translation"`` gives metres, ``"rotation"`` the angle in degrees.
    A monocular estimate needs ``align="sim3"`` so that its scale is corrected; the
    error is otherwise independent of a rigid alignment.
    """
    from evo import EvoException
    from evo.core import metrics
    from evo.core.units import Unit

    units = {"frames": Unit.frames, "m": Unit.meters}
    relations = {
        "translation": (metrics.PoseRelation.translation_part, "m"),
        "rotation": (metrics.PoseRelation.rotation_angle_deg, "deg"),
    }
    if delta_unit not in units or relation not in relations:
        raise EvaluationError(f"unsupported RPE setting: {delta_unit!r}, {relation!r}")
    evo_gt, evo_est = _associate(gt, est, max_diff_s, 2)
    aligned, _, _ = _align(evo_est, evo_gt, align)
    pose_relation, unit = relations[relation]
    try:
        metric = metrics.RPE(pose_relation, delta=delta, delta_unit=units[delta_unit])
        metric.process_data((evo_gt, aligned))
    except EvoException as exc:
        raise EvaluationError(f"RPE failed: {exc}") from exc
    errors = np.asarray(metric.error, dtype=np.float64)
    if errors.size == 0:
        raise EvaluationError(f"no pose pair is {delta} {delta_unit} apart")
    return RpeResult(_stats(errors), float(delta), delta_unit, unit, errors)

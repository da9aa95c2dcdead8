"""Local bundle adjustment: Levenberg-Marquardt with the Schur complement on the cameras.

Points are eliminated (per-point 3x3 blocks inverted), the dense reduced camera system
(6M x 6M, fine for M <= ~30 free cameras) is solved by Cholesky, then the point updates are
back-substituted. The LM schedule is g2o's ``OptimizationAlgorithmLevenberg`` (lambda added
to the whole Hessian diagonal, initial lambda ``1e-5 * max diag``, Nielsen's update, at most
10 trials per iteration), so results are directly comparable with :mod:`slam.optim.g2o_ba`.

**Cost.** ``cost = sum over active observations of rho(chi2_o)`` with
``chi2_o = inv_sigma2_o * |e_o|^2`` (``e_o`` the 2- or 3-vector residual, see
:mod:`slam.optim.kernels`) and ``rho`` the Huber kernel (threshold sqrt(5.991) mono,
sqrt(7.815) stereo) when ``huber`` else the identity. This is exactly g2o's
``optimizer.active_robust_chi2()`` after ``compute_active_errors()`` (which equals
``optimizer.chi2()`` without robust kernels). Observations whose point has depth
<= 1e-6 in their camera contribute nothing (and are outliers in ``inlier_obs``).

**Outlier passes.** ORB-SLAM's second pass is ``solve_local_ba(problem,
exclude_obs=~first.inlier_obs)`` on the first result's poses/points (see
:func:`problem_with_estimate`); excluded observations are ignored by the optimisation but
still re-classified in ``inlier_obs``.

**Aborting.** ``abort_flag`` (``np.zeros(1, np.int32)``) is read before every LM iteration
and trial; setting it to 1 from another thread stops the solve, which keeps the last
accepted estimate and reports ``aborted=True``. The Numba core releases the GIL.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from slam.errors import GeometryError
from slam.optim._ba_core import classify_observations, lm_schur

F64 = NDArray[np.float64]


@dataclass
class BAProblem:
    """A bundle-adjustment problem: M cameras, P points, O observations.

    Attributes:
        T_cam_world: (M, 4, 4) initial poses, camera-from-world.
        fixed_cams: (M,) bool, cameras held constant (ORB-SLAM's covisible non-local KFs).
        xyz_world: (P, 3) initial points, world frame, metres.
        obs_cam: (O,) int32 camera index of each observation.
        obs_pt: (O,) int32 point index of each observation.
        obs_uv: (O, 2) undistorted pixels.
        obs_u_right: (O,) right-image u (stereo / RGB-D virtual right), < 0 for monocular.
        obs_inv_sigma2: (O,) information weight, 1 / scale_level^2.
        K: (3, 3) intrinsics.
        bf: baseline * fx (pixels * metres), used by stereo observations.
        fixed_pts: optional (P,) bool, points held constant.
    """

    T_cam_world: F64
    fixed_cams: NDArray[np.bool_]
    xyz_world: F64
    obs_cam: NDArray[np.int32]
    obs_pt: NDArray[np.int32]
    obs_uv: F64
    obs_u_right: F64
    obs_inv_sigma2: F64
    K: F64
    bf: float = 0.0
    fixed_pts: NDArray[np.bool_] | None = None

    @property
    def n_obs(self) -> int:
        """Number of observations O."""
        return int(np.asarray(self.obs_cam).shape[0])

    def validate(self) -> None:
        """Raise :class:`GeometryError` on inconsistent shapes or out-of-range indices."""
        M = np.asarray(self.T_cam_world).shape[0]
        P = np.asarray(self.xyz_world).shape[0]
        O = self.n_obs
        shapes = {
            "T_cam_world": (np.shape(self.T_cam_world), (M, 4, 4)),
            "fixed_cams": (np.shape(self.fixed_cams), (M,)),
            "xyz_world": (np.shape(self.xyz_world), (P, 3)),
            "obs_pt": (np.shape(self.obs_pt), (O,)),
            "obs_uv": (np.shape(self.obs_uv), (O, 2)),
            "obs_u_right": (np.shape(self.obs_u_right), (O,)),
            "obs_inv_sigma2": (np.shape(self.obs_inv_sigma2), (O,)),
            "K": (np.shape(self.K), (3, 3)),
        }
        if self.fixed_pts is not None:
            shapes["fixed_pts"] = (np.shape(self.fixed_pts), (P,))
        for name, (got, want) in shapes.items():
            if got != want:
                raise GeometryError(f"BAProblem.{name} has shape {got}, expected {want}")
        if O and (np.min(self.obs_cam) < 0 or np.max(self.obs_cam) >= M
                  or np.min(self.obs_pt) < 0 or np.max(self.obs_pt) >= P):
            raise GeometryError("BAProblem: observation index out of range")
        if O and not np.all(np.asarray(self.obs_inv_sigma2) > 0):
            raise GeometryError("BAProblem: obs_inv_sigma2 must be positive")


@dataclass
class BAResult:
    """Solution of a :class:`BAProblem`.

    Attributes:
        T_cam_world: (M, 4, 4) optimised poses.
        xyz_world: (P, 3) optimised points.
        initial_cost / final_cost: robust cost (module docstring) at the start / end.
        iterations: LM iterations run.
        aborted: stopped by ``abort_flag``.
        inlier_obs: (O,) bool, chi2 <= 5.991 (mono) / 7.815 (stereo) and positive depth at
            the final estimate, over all observations (excluded ones included).
    """

    T_cam_world: F64
    xyz_world: F64
    initial_cost: float
    final_cost: float
    iterations: int
    aborted: bool
    inlier_obs: NDArray[np.bool_]


def problem_with_estimate(problem: BAProblem, result: BAResult) -> BAProblem:
    """A copy of ``problem`` whose initial estimate is ``result``'s (for a second pass)."""
    return dataclasses.replace(problem, T_cam_world=result.T_cam_world.copy(),
                               xyz_world=result.xyz_world.copy())


def _free_index(fixed: NDArray[np.bool_]) -> NDArray[np.int64]:
    """Index among the free entries (-1 for fixed ones)."""
    free = ~np.asarray(fixed, dtype=bool)
    idx = np.full(free.shape[0], -1, dtype=np.int64)
    idx[free] = np.arange(int(free.sum()))
    return idx


def _packed(problem: BAProblem) -> tuple[F64, F64, NDArray[np.int64], NDArray[np.int64],
                                         F64, F64, F64, F64]:
    """Contiguous float64 / int64 copies of the arrays the Numba core reads."""
    K = np.asarray(problem.K, dtype=np.float64)
    cam = np.array([K[0, 0], K[1, 1], K[0, 2], K[1, 2], float(problem.bf)])
    return (
        np.array(problem.T_cam_world, dtype=np.float64, order="C"),
        np.array(problem.xyz_world, dtype=np.float64, order="C"),
        np.ascontiguousarray(problem.obs_cam, dtype=np.int64),
        np.ascontiguousarray(problem.obs_pt, dtype=np.int64),
        np.ascontiguousarray(problem.obs_uv, dtype=np.float64),
        np.ascontiguousarray(problem.obs_u_right, dtype=np.float64),
        np.ascontiguousarray(problem.obs_inv_sigma2, dtype=np.float64),
        cam,
    )


def observation_chi2(problem: BAProblem, T_cam_world: F64, xyz_world: F64
                     ) -> tuple[F64, NDArray[np.bool_]]:
    """Per-observation chi2 (O,) and depth validity (O,) at the given estimate."""
    _, _, oc, op, uv, ur, w, cam = _packed(problem)
    T = np.ascontiguousarray(T_cam_world, dtype=np.float64)
    X = np.ascontiguousarray(xyz_world, dtype=np.float64)
    chi2 = np.zeros(oc.shape[0])
    valid = np.zeros(oc.shape[0], dtype=np.bool_)
    inl = np.zeros(oc.shape[0], dtype=np.bool_)
    classify_observations(T, X, oc, op, uv, ur, w, cam, chi2, valid, inl)
    return chi2, valid


def solve_local_ba(
    problem: BAProblem,
    iterations: int = 10,
    huber: bool = True,
    abort_flag: NDArray[np.int32] | None = None,
    exclude_obs: NDArray[np.bool_] | None = None,
    min_rel_decrease: float = 0.0,
) -> BAResult:
    """Run LM bundle adjustment on ``problem`` (see the module docstring).

    Args:
        problem: the problem; its arrays are not modified.
        iterations: maximum LM iterations (each with up to 10 lambda trials).
        huber: use the Huber kernel.
        abort_flag: optional ``(1,) int32`` array; a non-zero value stops the solve.
        exclude_obs: optional (O,) bool, observations left out of the optimisation.
        min_rel_decrease: stop once an accepted step lowers the cost by less than this
            fraction (0 = run all iterations, as g2o).

    Returns:
        The :class:`BAResult`.
    """
    problem.validate()
    T, X, oc, op, uv, ur, w, cam = _packed(problem)
    O = oc.shape[0]
    active = np.ones(O, dtype=bool)
    if exclude_obs is not None:
        if np.shape(exclude_obs) != (O,):
            raise GeometryError(f"exclude_obs has shape {np.shape(exclude_obs)}, expected ({O},)")
        active &= ~np.asarray(exclude_obs, dtype=bool)
    act_idx = np.flatnonzero(active)
    order = act_idx[np.argsort(op[act_idx], kind="stable")].astype(np.int64)
    P = X.shape[0]
    pt_start = np.zeros(P + 1, dtype=np.int64)
    np.cumsum(np.bincount(op[order], minlength=P), out=pt_start[1:])
    fixed_pts = np.zeros(P, bool) if problem.fixed_pts is None else problem.fixed_pts
    free_cam = _free_index(problem.fixed_cams)
    free_pt = _free_index(fixed_pts)
    flag = np.zeros(1, dtype=np.int32) if abort_flag is None else abort_flag
    init_cost, final_cost, its, aborted = lm_schur(
        T, X, oc, op, uv, ur, w, cam, order, pt_start, free_cam, free_pt,
        int(iterations), bool(huber), flag, float(min_rel_decrease),
    )
    chi2 = np.zeros(O)
    valid = np.zeros(O, dtype=np.bool_)
    inlier = np.zeros(O, dtype=np.bool_)
    classify_observations(T, X, oc, op, uv, ur, w, cam, chi2, valid, inlier)
    return BAResult(T, X, float(init_cost), float(final_cost), int(its), bool(aborted), inlier)

"""Essential-graph (pose-graph) optimisation over keyframe similarities with g2o.

Similarities are 4x4 ``S = [[s R, t], [0, 1]]``; a keyframe pose as a similarity is
``S_cam_world`` and an edge measures ``S_cam_i_cam_j = S_cam_i_world S_cam_j_world^-1``.
After correction a keyframe's rigid pose is ``T_cam_world = [R | t / s]``
(:func:`sim3_to_se3`).

g2o conventions (checked by tests): ``EdgeSim3`` with vertices ``(v0, v1)`` measures
``C = v1 v0^-1`` with the error ``log(C v0 v1^-1)`` in g2o's tangent order
``[phi, rho, sigma]``; so an edge ``(i, j)`` gets ``v0 = j``, ``v1 = i`` and the
measurement ``S_cam_i_cam_j``, and its residual is ``log(S_i_j S_cam_j_world
S_cam_i_world^-1)``.

With ``fix_scale`` (stereo/RGB-D) g2opy cannot set ``VertexSim3Expmap._fix_scale``, so
the same graph is built from the slam3d types: ``VertexSE3`` at ``T_world_cam`` and
``EdgeSE3`` (``v0 = i``, ``v1 = j``, measuring ``v0^-1 v1 = T_cam_i_cam_j``). Not
``EdgeSE3Expmap``: on ``T_cam_world`` vertices its error ``v1^-1 C v0`` is expressed in
the world frame, so an identity information would weigh rotations by their distance
from the world origin. The information is mapped so both graphs weigh the same residual.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from slam.errors import GeometryError
from slam.geometry.lie import se3_adjoint, se3_inv, sim3_inv

try:
    import g2opy as g2o
except ImportError:  # pragma: no cover - g2opy is a declared dependency
    g2o = None

log = logging.getLogger(__name__)
Array = NDArray[np.float64]

_SCALE_TOL = 1e-6
_TO_G2O_SIM3 = np.array([3, 4, 5, 0, 1, 2, 6])  # [rho, phi, sigma] -> [phi, rho, sigma]


@dataclass(frozen=True)
class PoseGraphEdge:
    """A relative similarity ``S_i_j = S_cam_i_cam_j`` (4x4) between keyframes i and j.

    ``information`` (7x7, or 6x6 / 7x7 with a fixed scale; identity if None) weighs the
    residual ``log(S_i_j S_cam_j_world S_cam_i_world^-1)`` in :mod:`slam.geometry.lie`
    order ``[rho, phi, sigma]``.
    """

    i: int
    j: int
    S_i_j: Array
    information: Array | None = None


def _scale(S: Array) -> float:
    return float(np.cbrt(np.linalg.det(S[:3, :3])))


def relative_sim3(S_cam_world_i: Array, S_cam_world_j: Array) -> Array:
    """``S_cam_i_cam_j`` (4x4), mapping camera-j coordinates into camera i."""
    return np.asarray(S_cam_world_i @ sim3_inv(S_cam_world_j), dtype=np.float64)


def sim3_to_se3(S_cam_world: Array) -> tuple[Array, float]:
    """Rigid pose ``T_cam_world = [R | t / s]`` (4x4) and the scale ``s`` of a similarity."""
    S = np.asarray(S_cam_world, dtype=np.float64)
    s = _scale(S)
    T = np.eye(4)
    T[:3, :3] = S[:3, :3] / s
    T[:3, 3] = S[:3, 3] / s
    return T, s


def _information(edge: PoseGraphEdge, fix_scale: bool) -> Array:
    """The edge's information in g2o's residual (see the module docstring)."""
    dim = 6 if fix_scale else 7
    info = np.eye(dim) if edge.information is None else np.asarray(edge.information, float)
    if info.shape not in ((dim, dim), (7, 7)):
        raise GeometryError(f"edge ({edge.i}, {edge.j}): information of shape {info.shape}, "
                            f"expected ({dim}, {dim})")
    info = info[:dim, :dim]
    if not fix_scale:
        return np.ascontiguousarray(info[np.ix_(_TO_G2O_SIM3, _TO_G2O_SIM3)])
    # EdgeSE3's residual E = S_i_j^-1 S_i S_j^-1 relates to ours by
    # log(S_i_j E^-1 S_i_j^-1) = -Ad(S_i_j) log(E), and stores [t, q_vec] ~ [rho, phi / 2].
    Ad = se3_adjoint(sim3_to_se3(edge.S_i_j)[0])
    D_inv = np.diag([1.0, 1.0, 1.0, 2.0, 2.0, 2.0])
    return np.ascontiguousarray(D_inv @ Ad.T @ info @ Ad @ D_inv)


def _rigid(S: Array, what: str) -> Array:
    """``T`` of ``S``, which must have scale 1 (fixed-scale graphs)."""
    T, s = sim3_to_se3(S)
    if not np.isfinite(T).all() or abs(s - 1.0) > _SCALE_TOL:
        raise GeometryError(f"{what}: scale {s:.6g} with fix_scale (expected 1)")
    return T


def _g2o_sim3(S: Array, what: str) -> Any:
    s = _scale(S)
    if not (np.isfinite(S).all() and s > 0.0):
        raise GeometryError(f"{what}: not a similarity")
    return g2o.Sim3(np.asfortranarray(S[:3, :3] / s), np.array(S[:3, 3], dtype=float), s)


def _vertex(k: int, S: Array, fix_scale: bool) -> Any:
    """``VertexSE3`` at ``T_world_cam`` or ``VertexSim3Expmap`` at ``S_cam_world``."""
    if fix_scale:
        v = g2o.VertexSE3()
        v.set_estimate(g2o.Isometry3d(se3_inv(_rigid(S, f"keyframe {k}"))))
    else:
        v = g2o.VertexSim3Expmap()
        v.set_estimate(_g2o_sim3(S, f"keyframe {k}"))
    return v


def _edge(edge: PoseGraphEdge, vi: Any, vj: Any, fix_scale: bool) -> Any:
    what = f"edge ({edge.i}, {edge.j})"
    S_ij = np.asarray(edge.S_i_j, dtype=np.float64)
    if fix_scale:  # EdgeSE3 measures v0^-1 v1 = T_world_cam_i^-1 T_world_cam_j
        e, v0, v1 = g2o.EdgeSE3(), vi, vj
        e.set_measurement(g2o.Isometry3d(_rigid(S_ij, what)))
    else:  # EdgeSim3 measures v1 v0^-1 = S_cam_i_world S_cam_j_world^-1
        e, v0, v1 = g2o.EdgeSim3(), vj, vi
        e.set_measurement(_g2o_sim3(S_ij, what))
    e.set_vertex(0, v0)
    e.set_vertex(1, v1)
    e.set_information(_information(edge, fix_scale))
    return e


def _read(v: Any, fix_scale: bool) -> Array:
    est = v.estimate()
    if fix_scale:
        return se3_inv(np.asarray(est.matrix(), dtype=np.float64))
    S = np.eye(4)
    S[:3, :3] = est.scale() * np.asarray(est.rotation().matrix())
    S[:3, 3] = est.translation()
    return S


def _build(S_cam_world: Mapping[int, Array], edges: Sequence[PoseGraphEdge],
           fixed: Collection[int], fix_scale: bool) -> tuple[Any, dict[int, Any]]:
    """The g2o optimiser and its vertex per keyframe id."""
    opt = g2o.SparseOptimizer()
    if fix_scale:
        solver = g2o.BlockSolverSE3(g2o.LinearSolverEigenSE3())
    else:
        solver = g2o.BlockSolverSim3(g2o.LinearSolverEigenSim3())
    opt.set_algorithm(g2o.OptimizationAlgorithmLevenberg(solver))
    fixed_set = {int(k) for k in fixed}
    vertices: dict[int, Any] = {}
    for n, (k, S) in enumerate(sorted(S_cam_world.items())):
        v = _vertex(int(k), np.asarray(S, dtype=np.float64), fix_scale)
        v.set_id(n)
        v.set_fixed(int(k) in fixed_set)
        opt.add_vertex(v)
        vertices[int(k)] = v
    for edge in edges:
        if edge.i not in vertices or edge.j not in vertices:
            raise GeometryError(f"edge ({edge.i}, {edge.j}) names a keyframe with no pose")
        opt.add_edge(_edge(edge, vertices[edge.i], vertices[edge.j], fix_scale))
    return opt, vertices


def optimize_essential_graph(
    S_cam_world: dict[int, Array], edges: Sequence[PoseGraphEdge], fixed: Collection[int],
    *, fix_scale: bool, iterations: int = 20,
) -> dict[int, Array]:
    """Optimised ``S_cam_world`` (4x4) per keyframe id of ``S_cam_world``.

    One vertex per keyframe (held fixed if its id is in ``fixed``), one edge per
    :class:`PoseGraphEdge`, g2o Levenberg-Marquardt with ``BlockSolverSim3`` and the
    Eigen sparse Cholesky. With ``fix_scale`` every pose and measurement must have
    scale 1 (else :class:`GeometryError`) and so has the result (SE(3) graph, the
    information mapped onto g2o's ``EdgeSE3`` error to first order). Fixed keyframes,
    and ids in ``fixed`` with no pose are ignored, are returned as given.
    """
    if g2o is None:  # pragma: no cover
        raise GeometryError("g2opy is not installed")
    out = {int(k): np.array(S, dtype=np.float64) for k, S in S_cam_world.items()}
    opt, vertices = _build(S_cam_world, edges, fixed, fix_scale)
    if not edges:
        return out
    opt.initialize_optimization()
    opt.compute_active_errors()
    chi2_before = float(opt.active_chi2())
    opt.optimize(int(iterations))
    opt.compute_active_errors()
    log.debug("essential graph: %d vertices, %d edges, chi2 %.4g -> %.4g", len(vertices),
              len(edges), chi2_before, float(opt.active_chi2()))
    for k, v in vertices.items():
        if not v.fixed():
            out[k] = _read(v, fix_scale)
    return out

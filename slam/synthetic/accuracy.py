"""Accuracy of a reconstruction against exact planar surfaces (the synthetic room's quads).

Test and benchmark tooling (``tests/dense``, ``benchmarks/bench_dense.py``): it measures a
mesh or point cloud against the room the renderer drew, so it lives with the renderer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from slam.synthetic.scene import Quad

Array = NDArray[np.float64]


def distance_to_quads(xyz_world: Array, quads: Sequence[Quad], chunk: int = 200_000) -> Array:
    """Distance (N,) metres from each point (N, 3) to the nearest of the rectangles
    ``quads`` (each ``origin + s * axis_u + t * axis_v``, s in [0, size_u], t in
    [0, size_v]): the point's offset to its closest point on each rectangle."""
    xyz = np.asarray(xyz_world, np.float64).reshape(-1, 3)
    out = np.full(len(xyz), np.inf)
    for lo in range(0, len(xyz), chunk):
        p = xyz[lo: lo + chunk]
        best = out[lo: lo + chunk]
        for q in quads:
            rel = p - q.origin
            s = np.clip(rel @ q.axis_u, 0.0, q.size_u_m)
            t = np.clip(rel @ q.axis_v, 0.0, q.size_v_m)
            closest = q.origin + s[:, None] * q.axis_u + t[:, None] * q.axis_v
            np.minimum(best, np.linalg.norm(p - closest, axis=1), out=best)
    return out


@dataclass(frozen=True)
class SurfaceError:
    """Distances of reconstructed points to the true surfaces (metres)."""

    n: int
    median_m: float
    p95_m: float
    max_m: float

    def __str__(self) -> str:
        return (f"{self.n} vertices: median {100 * self.median_m:.2f} cm, "
                f"p95 {100 * self.p95_m:.2f} cm, max {100 * self.max_m:.2f} cm")


def surface_error(xyz_world: Array, quads: Sequence[Quad]) -> SurfaceError:
    """Median, 95th percentile and maximum of :func:`distance_to_quads`."""
    d = distance_to_quads(xyz_world, quads)
    if len(d) == 0:
        return SurfaceError(0, float("nan"), float("nan"), float("nan"))
    return SurfaceError(len(d), float(np.median(d)), float(np.percentile(d, 95)),
                        float(d.max()))

"""Distances to the true surfaces, against hand-computed values."""

from __future__ import annotations

import numpy as np

from slam.synthetic.accuracy import distance_to_quads, surface_error
from slam.synthetic.scene import Quad

FLOOR = Quad(np.zeros(3), np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]), 2.0, 1.0,
             np.zeros((8, 8), np.uint8), 0.25)
WALL = Quad(np.array([0.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, 1.0]),
            1.0, 1.0, np.zeros((8, 8), np.uint8), 0.25)


def test_distance_to_one_rectangle() -> None:
    pts = np.array([[1.0, 0.5, 0.3],  # above the floor
                    [3.0, 0.5, 0.0],  # 1 m beyond its far edge
                    [3.0, 2.0, 0.0],  # beyond a corner: (1, 1)
                    [1.0, 0.5, -0.2]])  # below (one-sided quads: distance all the same)
    np.testing.assert_allclose(distance_to_quads(pts, [FLOOR]), [0.3, 1.0, np.sqrt(2), 0.2])


def test_the_nearest_rectangle_wins() -> None:
    pts = np.array([[0.1, 0.5, 0.5], [1.5, 0.5, 0.05]])
    np.testing.assert_allclose(distance_to_quads(pts, [FLOOR, WALL]), [0.1, 0.05])
    np.testing.assert_allclose(distance_to_quads(pts, [FLOOR, WALL], chunk=1), [0.1, 0.05])


def test_surface_error_statistics() -> None:
    pts = np.column_stack([np.full(100, 1.0), np.full(100, 0.5), np.linspace(0.0, 0.099, 100)])
    err = surface_error(pts, [FLOOR])
    assert err.n == 100 and abs(err.median_m - 0.0495) < 1e-9 and abs(err.max_m - 0.099) < 1e-12
    assert abs(err.p95_m - np.percentile(pts[:, 2], 95)) < 1e-12 and "median 4.95 cm" in str(err)
    assert np.isnan(surface_error(np.zeros((0, 3)), [FLOOR]).median_m)

"""Scene geometry (face orientation, free space) and texture properties."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from slam.errors import ConfigError
from slam.synthetic.scene import Quad, box_faces, make_texture, room_scene


def _centre(q: Quad) -> np.ndarray:
    return q.corners.mean(axis=0)


@pytest.mark.parametrize("inward", [False, True])
def test_box_faces_cover_the_box_with_the_right_normals(inward: bool) -> None:
    lo, hi = np.array([1.0, 2.0, 0.0]), np.array([1.5, 2.8, 1.2])
    faces = box_faces(lo, hi, np.random.default_rng(0), inward=inward, metres_per_texel=0.02)
    centre = (lo + hi) / 2
    assert len(faces) == 6
    for q in faces:
        outward = float(q.normal @ (_centre(q) - centre))
        assert (outward < 0) if inward else (outward > 0)
        assert np.all(q.corners >= lo - 1e-12) and np.all(q.corners <= hi + 1e-12)
        # the texture covers the face at the stated resolution
        assert q.texture.shape[1] == pytest.approx(q.size_u_m / q.metres_per_texel, abs=1)
        assert q.texture.shape[0] == pytest.approx(q.size_v_m / q.metres_per_texel, abs=1)
    areas = sorted(q.size_u_m * q.size_v_m for q in faces)
    np.testing.assert_allclose(areas, sorted([0.5 * 0.8] * 2 + [0.5 * 1.2] * 2 + [0.8 * 1.2] * 2))


def test_room_scene_free_space_and_faces_seen_from_inside() -> None:
    scene = room_scene(0)
    np.testing.assert_array_equal(scene.room_hi, [8.0, 6.0, 3.0])
    centre = np.array([4.0, 3.0, 1.5])
    room_faces = [q for q in scene.quads[:6]]
    assert all(q.normal @ (centre - _centre(q)) > 0 for q in room_faces)
    assert scene.is_free(centre[None], clearance_m=0.5).all()
    box = scene.boxes[0]
    inside = (box.lo + box.hi) / 2
    outside_room = np.array([9.0, 3.0, 1.5])
    assert not scene.is_free(np.stack([inside, outside_room])).any()
    near_box = np.array([box.hi[0] + 0.1, inside[1], 1.0])
    assert scene.is_free(near_box[None]).all() and not scene.is_free(near_box[None], 0.2).any()


def test_quad_rejects_non_orthogonal_axes() -> None:
    with pytest.raises(ConfigError):
        Quad(np.zeros(3), np.array([1.0, 0, 0]), np.array([1.0, 1.0, 0]) / np.sqrt(2), 1.0, 1.0,
             np.zeros((10, 10), np.uint8), 0.1)


def test_texture_is_deterministic_contrasted_and_not_repetitive() -> None:
    tex = make_texture(600, 400, 200.0, np.random.default_rng(7))
    np.testing.assert_array_equal(tex, make_texture(600, 400, 200.0, np.random.default_rng(7)))
    assert not np.array_equal(tex, make_texture(600, 400, 200.0, np.random.default_rng(8)))
    assert tex.dtype == np.uint8 and tex.shape == (400, 600)
    assert np.percentile(tex, 95) - np.percentile(tex, 5) > 100
    # a patch matches only at its own place: no periodic structure to alias on
    rng = np.random.default_rng(0)
    for _ in range(5):
        x, y = rng.integers(0, 600 - 48), rng.integers(0, 400 - 48)
        score = cv2.matchTemplate(tex, tex[y:y + 48, x:x + 48], cv2.TM_CCOEFF_NORMED)
        assert np.unravel_index(np.argmax(score), score.shape) == (y, x)
        score[max(y - 12, 0):y + 13, max(x - 12, 0):x + 13] = -1.0
        assert score.max() < 0.8

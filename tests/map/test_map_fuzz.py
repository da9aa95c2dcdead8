"""A fuzzer for map files: mutations of a real saved map (bit flips, byte runs, cuts,
msgpack-level edits of header, scalars, arrays and sections, checksums recomputed so
that the mutations get past them) are each loaded or refused with MapFileError, never
another exception. ``benchmarks/fuzz_maps.py`` runs 10,000 of them and measures memory."""

from __future__ import annotations

import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slam.errors import MapFileError
from slam.map.persistence import load_map, save_map
from tests.map.map_edit import MUTATIONS, mutate
from tests.map.test_persistence import CALIB, build_map, depth_image, smooth_image


@lru_cache(maxsize=1)
def real_map() -> bytes:
    """A saved RGB-D map: 5 keyframes with JPEG colour and PNG depth, one culled."""
    m = build_map(5, 100, 100)
    for i, kf in enumerate(m.keyframes.values()):
        kf.frame.color = smooth_image((240, 320, 3), i)
        kf.frame.depth_image = depth_image((240, 320), i)
    m.erase_keyframe(3)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "real.map"
        save_map(path, m, CALIB, "rgbd", extra={"loops": [{"a": 1, "b": [2, 3]}]})
        return path.read_bytes()


@pytest.fixture(scope="module")
def mutants(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mutants")


@pytest.mark.timeout(300)
@settings(max_examples=200, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(MUTATIONS), seed=st.integers(0, 2**32 - 1))
def test_every_mutant_is_loaded_or_refused_with_a_map_file_error(
    mutants: Path, kind: str, seed: int
) -> None:
    path = mutants / "mutant.map"
    path.write_bytes(mutate(real_map(), kind, np.random.default_rng(seed)))
    try:
        loaded = load_map(path, sensor="rgbd")
    except MapFileError as exc:
        msg = str(exc)
        assert "mutant.map" in msg and "\n" not in msg, msg
        assert "internal error" not in msg, msg  # every refusal comes from a check
    else:
        assert loaded.map.n_keyframes() >= 0

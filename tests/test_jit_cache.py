"""slam.jit_cache: cached kernels load at start-up, before their first call.

Each case runs in its own interpreter with its own cache folder, so that nothing this
process compiled or loaded decides the outcome."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[1]

_MODULE = """
from numba import njit

@njit(cache=True, nogil=True)
def twice(x):
    return 2 * x

@njit(nogil=True)
def uncached(x):
    return x + 1
"""

_CALL = "import jitprobe; jitprobe.twice(1.5); jitprobe.twice(3)"

_PRELOAD = """
import json
import jitprobe
from slam.jit_cache import load_cached_kernels
n, seconds = load_cached_kernels("jitprobe")
again, _ = load_cached_kernels("jitprobe")
twice = jitprobe.twice
loaded = len(twice.signatures)
twice(1.5)
print(json.dumps({"n": n, "again": again, "loaded_before_call": loaded,
                  "hits": sum(twice.stats.cache_hits.values()),
                  "misses": sum(twice.stats.cache_misses.values()),
                  "uncached": len(jitprobe.uncached.signatures)}))
"""


def _python(code: str, tmp_path: Path) -> str:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)]))
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                         capture_output=True, text=True, timeout=100, check=False)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_cached_overloads_load_before_the_first_call(tmp_path: Path) -> None:
    (tmp_path / "jitprobe.py").write_text(_MODULE)
    _python(_CALL, tmp_path)  # compiles twice(float64) and twice(int64) into the cache
    out = json.loads(_python(_PRELOAD, tmp_path).splitlines()[-1])
    assert out["n"] == 2 and out["loaded_before_call"] == 2
    assert out["again"] == 0  # loaded already: nothing more to do
    assert out["hits"] == 2 and out["misses"] == 0  # loads, no compilation
    assert out["uncached"] == 0  # a kernel without cache=True is left to its first call


def test_nothing_to_load_without_a_cache(tmp_path: Path) -> None:
    (tmp_path / "jitprobe.py").write_text(_MODULE)
    out = json.loads(_python(_PRELOAD, tmp_path).splitlines()[-1])
    assert out["n"] == 0 and out["loaded_before_call"] == 0
    assert out["misses"] == 1  # the first call compiles, as before


def test_the_system_preloads_its_kernels(tmp_path: Path) -> None:
    """A SlamSystem built in a process whose cache holds its kernels starts with them
    loaded (the preload runs in its constructor)."""
    code = """
    import json
    from slam.camera import Calibration, PinholeCamera
    from slam.config import SlamConfig
    from slam.features.matching import _hamming_rows
    from slam.system import SlamSystem
    import numpy as np
    a = np.zeros((2, 32), np.uint8)
    if {warm}:
        _hamming_rows(a.view(np.uint64), a.view(np.uint64))
    else:
        cam = PinholeCamera(500.0, 500.0, 320.0, 240.0, 640, 480)
        calib = Calibration(camera=cam, bf=40.0, depth_factor=5000.0)
        system = SlamSystem(SlamConfig(), calib, "rgbd")
        loaded = len(_hamming_rows.signatures)
        system.close()
        print(json.dumps({{"loaded": loaded}}))
    """
    _python(code.format(warm=True), tmp_path)
    out = json.loads(_python(code.format(warm=False), tmp_path).splitlines()[-1])
    assert out["loaded"] >= 1

"""The project as a user installs it: a wheel in a fresh venv runs ``slam run``.

The wheel is built from a copy of what pyproject ships (so the checkout gets no
``build/`` or ``*.egg-info``), with ``--no-build-isolation --no-index``: the running
environment's setuptools builds it and nothing is downloaded.

Where it is installed: a fresh venv made from the base interpreter, without pip, into
which pip (``--python``) installs the wheel non-editable. The venv sees the project's
dependencies through a ``.pth`` file that lists the site-packages folders of the running
environment. A path line in a ``.pth`` file only extends ``sys.path``: the ``.pth``
files inside the folder it adds are not run, so the checkout's editable finder
(``__editable__...pth`` in the test environment) stays out, and the venv's own
site-packages comes first, so its ``slam`` and its metadata (entry points) win. (``venv
--system-site-packages`` from inside a venv would see the base interpreter's packages,
not this environment's; ``pip --target`` with ``python -S`` would run no console
script.) The run happens in a temporary folder outside the checkout, without
``PYTHONPATH``, so the checkout is reachable only as the data it reads.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "datasets" / "sample" / "rgbd_dataset_freiburg1_rpy"
MAX_FRAMES = 30
MIN_SETUPTOOLS = 77  # pyproject's build-system (PEP 639 licence string)
STEP_TIMEOUT_S = 600  # building, installing; running compiles every Numba kernel afresh
SHIPPED_DATA = ("slam/data/vocab/orb_k10_L4.npz", "slam/data/vocab/README.md",
                "slam/data/models/descriptor.onnx", "slam/data/models/descriptor.json",
                "slam/data/models/embedding.onnx", "slam/data/models/embedding.json",
                "slam/data/models/MODEL_CARD.md", "server/web/index.html")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3 * STEP_TIMEOUT_S)]


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=STEP_TIMEOUT_S, check=False)
    assert res.returncode == 0, (f"{' '.join(cmd)} exited {res.returncode}:\n"
                                 f"{res.stdout[-2000:]}\n{res.stderr[-4000:]}")
    return res


def copy_project(dest: Path) -> Path:
    """pyproject.toml, the readme and the packages pyproject includes, copied to ``dest``."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    dest.mkdir()
    for name in ("pyproject.toml", pyproject["project"]["readme"]):
        shutil.copy2(ROOT / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc")
    for pkg in ROOT.iterdir():
        if (pkg / "__init__.py").is_file() and any(fnmatch.fnmatch(pkg.name, p)
                                                    for p in patterns):
            shutil.copytree(pkg, dest / pkg.name, ignore=ignore)
    return dest


def dependency_paths() -> list[str]:
    """The site-packages folders the running interpreter imports the dependencies from."""
    return [p for p in sys.path
            if Path(p).name in ("site-packages", "dist-packages") and Path(p).is_dir()]


def fresh_venv(where: Path) -> Path:
    """A venv of the base interpreter, without pip, that sees :func:`dependency_paths`."""
    base = getattr(sys, "_base_executable", sys.executable)
    _run([base, "-m", "venv", "--without-pip", str(where)], cwd=where.parent)
    python = where / "bin" / "python"
    site = _run([str(python), "-c", "import site; print(site.getsitepackages()[0])"],
                cwd=where).stdout.strip()
    (Path(site) / "_project_dependencies.pth").write_text("\n".join(dependency_paths()) + "\n")
    return python


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(wheel, python of a fresh venv with the wheel installed)."""
    setuptools = importlib.metadata.version("setuptools")
    assert int(setuptools.split(".")[0]) >= MIN_SETUPTOOLS, (
        f"setuptools {setuptools} cannot build the wheel without isolation: install the "
        f"dev extra (setuptools>={MIN_SETUPTOOLS})")
    tmp = tmp_path_factory.mktemp("wheel")
    src = copy_project(tmp / "src")
    _run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-index",
          "--no-build-isolation", "-q", "-w", str(tmp / "dist")], cwd=tmp)
    (wheel,) = (tmp / "dist").glob("*.whl")
    python = fresh_venv(tmp / "venv")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
          "--no-index", "-q", str(wheel)], cwd=tmp)
    return wheel, python


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(NUMBA_CACHE_DIR=str(tmp / "numba_cache"), MPLCONFIGDIR=str(tmp / "mpl"))
    return env


def test_wheel_ships_the_runtime_data_and_no_tests(installed: tuple[Path, Path]) -> None:
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    assert set(SHIPPED_DATA) <= names, set(SHIPPED_DATA) - names
    assert not any(n.startswith(("tests/", "benchmarks/", "datasets/")) for n in names)


def test_installed_packages_come_from_the_venv(installed: tuple[Path, Path],
                                               tmp_path: Path) -> None:
    _, python = installed
    venv = python.parents[1]
    code = ("import slam, server, clients, slam.data as d; "
            "print(slam.__file__); print(server.__file__); print(clients.__file__); "
            "print(d.data_file('vocab', 'orb_k10_L4.npz'))")
    out = _run([str(python), "-c", code], cwd=tmp_path, env=_env(tmp_path)).stdout.split()
    for path in out:
        assert Path(path).is_relative_to(venv) and not Path(path).is_relative_to(ROOT), path
    assert Path(out[-1]).is_file()


@pytest.mark.skipif(not SAMPLE.is_dir(), reason="the bundled sample is missing")
def test_slam_run_on_the_sample_from_outside_the_checkout(installed: tuple[Path, Path],
                                                          tmp_path: Path) -> None:
    _, python = installed
    venv = python.parents[1]
    slam = venv / "bin" / "slam"
    assert str(python) in slam.read_text()[:500]  # the venv's console script
    work = tmp_path / "work"
    work.mkdir()
    res = _run([str(slam), "run", "--source", f"tum:{SAMPLE}", "--sensor", "rgbd",
                "--out", "traj.txt", "--max-frames", str(MAX_FRAMES), "--no-progress"],
               cwd=work, env=_env(tmp_path))
    lines = [x for x in (work / "traj.txt").read_text().splitlines() if not x.startswith("#")]
    assert len(lines) == MAX_FRAMES and all(len(x.split()) == 8 for x in lines)
    # the vocabulary that run loaded is the wheel's package data, not the checkout's
    loaded = re.search(r"loaded vocabulary (\S+):", res.stderr)
    assert loaded, res.stderr[-2000:]
    vocab = Path(loaded.group(1))
    assert vocab.is_relative_to(venv) and vocab.parts[-4:] == ("slam", "data", "vocab",
                                                               "orb_k10_L4.npz")

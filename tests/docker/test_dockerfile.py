"""The Dockerfile and compose file, checked without a Docker engine.

The image must install the project as the Makefile does, copy files that exist, run
as a non-root user, check its health with ``slam-client stats`` and start
``slam serve`` with arguments that parse.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from clients.cli import build_parser as client_parser

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
COMPOSE = ROOT / "docker" / "compose.yaml"
WORKDIR = "/app"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text())


def of(steps: list[tuple[str, str]], name: str) -> list[str]:
    return [args for word, args in steps if word == name]


def serve_parser() -> argparse.ArgumentParser:
    from server.cli import register

    parser = argparse.ArgumentParser(prog="slam")
    register(parser.add_subparsers(dest="command", required=True), [])
    return parser


def normalise_pip(cmd: str) -> str:
    """``$(PY) -m pip install -q -e '.[dev]'`` -> ``python -m pip install -q -e .``."""
    words = shlex.split(cmd.replace("$(PY)", "python"))
    return " ".join(re.sub(r"\[[^\]]*\]$", "", w) for w in words)


def makefile_pip_commands() -> list[str]:
    text = (ROOT / "Makefile").read_text()
    recipe = text.split("$(STAMP): pyproject.toml", 1)[1].split("\n\n", 1)[0]
    return [normalise_pip(line.strip()) for line in recipe.splitlines() if "pip install" in line]


def dockerfile_pip_commands(steps: list[tuple[str, str]]) -> list[str]:
    cmds = [c.strip() for run in of(steps, "RUN") for c in run.split("&&")]
    return [normalise_pip(c) for c in cmds if "pip install" in c]


def test_base_image_is_python_311_slim(dockerfile: list[tuple[str, str]]) -> None:
    assert of(dockerfile, "FROM") == ["python:3.11-slim"]


def test_installs_exactly_as_the_makefile(dockerfile: list[tuple[str, str]]) -> None:
    make = makefile_pip_commands()
    assert make == ["python -m pip install -q --upgrade pip", "python -m pip install -q -e ."]
    assert dockerfile_pip_commands(dockerfile) == make
    assert of(dockerfile, "WORKDIR") == [WORKDIR]


def test_opencv_is_the_headless_wheel_of_pyproject() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=!~ \[]", d, maxsplit=1)[0].lower() for d in deps}
    assert "opencv-python-headless" in names and "opencv-python" not in names


def test_copied_files_exist_and_cover_the_install(dockerfile: list[tuple[str, str]]) -> None:
    copied: list[str] = []
    for args in of(dockerfile, "COPY"):
        *sources, _dest = shlex.split(args)
        assert not any(s.startswith("--") for s in sources), "no COPY --from/--chown expected"
        for src in sources:
            assert (ROOT / src).exists(), f"COPY {src}: not in the build context"
            copied.append(src.rstrip("/"))
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]
                ["include"]]
    needed = ["pyproject.toml", pyproject["project"]["readme"], *packages,
              "datasets"]  # the sample replayed by CMD and compose
    assert set(needed) <= set(copied), set(needed) - set(copied)


def test_runs_as_a_non_root_user(dockerfile: list[tuple[str, str]]) -> None:
    users = of(dockerfile, "USER")
    assert users and users[-1].split(":")[0] not in ("root", "0")
    words = [w for w, _ in dockerfile]
    assert words.index("USER") < words.index("ENTRYPOINT")
    assert any("useradd" in run and users[-1] in run for run in of(dockerfile, "RUN"))


def test_healthcheck_asks_for_stats(dockerfile: list[tuple[str, str]]) -> None:
    (check,) = of(dockerfile, "HEALTHCHECK")
    cmd = exec_form(check.split(" CMD ", 1)[1])
    assert cmd[0] == "slam-client" and cmd[-1] == "stats"
    args = client_parser().parse_args(cmd[1:])
    assert args.command == "stats" and args.timeout > 0
    assert "--timeout=10s" in check  # the check itself ends before Docker kills it


def test_ports_and_entrypoint(dockerfile: list[tuple[str, str]]) -> None:
    exposed = " ".join(of(dockerfile, "EXPOSE")).split()
    assert "5555-5557" in exposed and "8080" in exposed
    (entry,) = of(dockerfile, "ENTRYPOINT")
    assert exec_form(entry) == ["slam", "serve"]
    (cmd,) = of(dockerfile, "CMD")
    args = serve_parser().parse_args(["serve", *exec_form(cmd)])
    assert args.bind == "0.0.0.0"
    assert_sample_source(args.source)


def assert_sample_source(uri: str) -> None:
    scheme, _, path = uri.partition(":")
    assert scheme == "tum" and path.startswith(WORKDIR + "/")
    local = ROOT / path.removeprefix(WORKDIR + "/")
    assert local == ROOT / "datasets" / "sample" / "rgbd_dataset_freiburg1_rpy"
    assert (local / "rgb.txt").is_file()


def test_compose_server_replays_the_sample_on_all_interfaces() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    server = services["server"]
    assert server["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
    assert (COMPOSE.parent / server["build"]["context"] / "docker" / "Dockerfile").is_file()
    args = serve_parser().parse_args(["serve", *server["command"]])
    assert args.bind == "0.0.0.0" and args.sensor == "rgbd"
    assert_sample_source(args.source)
    assert "5555-5557:5555-5557" in server["ports"]


def test_compose_client_echoes_poses_from_the_server() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    client = services["client"]
    assert client["image"] == services["server"]["image"]
    assert client["depends_on"]["server"]["condition"] == "service_healthy"
    script = client["command"][0] if isinstance(client["command"], list) else client["command"]
    calls = [shlex.split(part.split("slam-client", 1)[1])
             for part in re.split(r"&&|&|\)", script) if "slam-client" in part]
    parsed = [client_parser().parse_args([w for w in c if w not in (">/dev/null",)])
              for c in calls]
    echo = [a for a in parsed if a.command == "echo"]
    assert len(echo) == 1 and echo[0].topic == "pose"
    assert echo[0].pub == "tcp://server:5555"
    assert all(a.cmd == "tcp://server:5556" for a in parsed)

"""The ``slam`` entry point: help, lazy imports, error boundary, logging options."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from slam.cli import evaluate, main
from slam.errors import CalibrationError, SlamError, TrackingError


def test_help_lists_both_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "run" in out and "eval" in out


def test_importing_the_cli_loads_no_heavy_package() -> None:
    code = (
        "import sys, slam.cli.main as m; m.build_parser();"
        "print(sorted(k for k in ('cv2', 'evo', 'matplotlib', 'numba', 'scipy', 'g2opy')"
        " if k in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_console_script_points_at_main() -> None:
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert 'slam = "slam.cli.main:main"' in pyproject


@pytest.mark.parametrize(
    ("error", "code"),
    [(SlamError("plain"), 1), (CalibrationError("bad\ncalib"), 2), (TrackingError("lost"), 6)],
)
def test_slam_errors_become_one_line_and_their_exit_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], error: SlamError, code: int
) -> None:
    def fail(args: object) -> int:
        raise error

    monkeypatch.setattr(evaluate, "execute", fail)
    assert main.main(["-q", "eval", "--gt", "a", "--est", "b"]) == code
    err = capsys.readouterr().err
    assert err.splitlines() == [f"slam: error: {' '.join(str(error).split())}"]


def test_interrupt_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupt(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate, "execute", interrupt)
    assert main.main(["eval", "--gt", "a", "--est", "b"]) == 130


def test_a_bug_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def bug(args: object) -> int:
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(evaluate, "execute", bug)
    with pytest.raises(ZeroDivisionError):
        main.main(["eval", "--gt", "a", "--est", "b"])


@pytest.mark.parametrize(
    ("argv", "slam_level"),
    [([], logging.INFO), (["-v"], logging.DEBUG), (["-q"], logging.WARNING)],
)
def test_verbosity_before_or_after_the_command(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], slam_level: int
) -> None:
    monkeypatch.setattr(evaluate, "execute", lambda args: 0)
    for position in ("before", "after"):
        cmd = ["eval", "--gt", "a", "--est", "b"]
        full = argv + cmd if position == "before" else cmd[:1] + argv + cmd[1:]
        assert main.main(full) == 0
        assert logging.getLogger("slam").level == slam_level


def test_service_subcommands_come_from_the_entry_point_group() -> None:
    from slam.cli.main import build_parser

    parser = build_parser()
    args = parser.parse_args(["serve", "--source", "synthetic:sideways", "--sensor", "rgbd"])
    assert args.command == "serve"
    assert not any(m == "server" or m.startswith("server.") for m in _slam_only_imports())


def _slam_only_imports() -> list[str]:
    """Modules that importing slam.cli.main pulls in, in a fresh interpreter."""
    import subprocess
    import sys

    code = "import sys, slam.cli.main; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    return out.split()


def test_a_broken_plugin_does_not_break_the_command(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import importlib.metadata as md

    from slam.cli import main as main_mod

    class Broken:
        value = "nowhere:register"

        def load(self):  # type: ignore[no-untyped-def]
            raise ImportError("no such module")

    monkeypatch.setattr(md, "entry_points", lambda group: [Broken()])
    parser = main_mod.build_parser()
    assert parser.parse_args(["eval", "--gt", "a", "--est", "b"]).command == "eval"


@pytest.mark.timeout(300)
def test_warmup_tracks_the_rendered_scene(capfd: pytest.CaptureFixture[str]) -> None:
    """``slam warmup`` runs the whole pipeline on a rendered scene (compiling what is
    not cached yet) and says so."""
    from slam.cli.main import main

    assert main(["warmup", "--sensor", "rgbd"]) == 0
    err = capfd.readouterr().err
    assert "map initialised from depth" in err  # it tracked
    assert "Numba kernels compiled and cached for rgbd" in err

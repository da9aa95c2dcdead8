"""Entry point of the ``slam`` command (``slam.cli.main:main``).

Kept light on purpose: only argparse, logging and the error classes are imported
here, so ``slam --help`` answers at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from slam import __version__
from slam.cli import bench_learned, calibrate, evaluate, export, run, train, vocab, warmup
from slam.errors import SlamError

log = logging.getLogger("slam")

EXIT_INTERRUPTED = 130


def _verbosity_options() -> argparse.ArgumentParser:
    """-v/-q, accepted before or after the subcommand."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_mutually_exclusive_group()
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="more log output (-vv: debug of every module)",
    )
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="only warnings and errors",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    """The ``slam`` parser with one subparser per command."""
    common = _verbosity_options()
    parser = argparse.ArgumentParser(
        prog="slam",
        description="Real-time visual SLAM (mono, stereo, RGB-D) and trajectory evaluation.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run.register(commands, [common])
    evaluate.register(commands, [common])
    vocab.register(commands, [common])
    train.register(commands, [common])
    bench_learned.register(commands, [common])
    export.register(commands, [common])
    calibrate.register(commands, [common])
    warmup.register(commands, [common])
    _register_plugins(commands, [common])
    return parser


PLUGIN_GROUP = "slam.commands"


def _register_plugins(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Subcommands of installed packages that build on slam (``slam serve`` comes from
    the ``server`` package this way: slam itself never imports it). Each entry point
    of the ``slam.commands`` group is a ``register(commands, parents)`` function."""
    from importlib.metadata import entry_points

    for ep in entry_points(group=PLUGIN_GROUP):
        try:
            ep.load()(commands, parents)
        except Exception as exc:  # a broken plugin must not break `slam run`
            log.debug("subcommands of %s not available: %s", ep.value, exc)


def configure_logging(verbose: int = 0, quiet: bool = False) -> None:
    """Configure the root logger once for the process (stderr)."""
    if quiet:
        level, slam_level = logging.WARNING, logging.WARNING
    elif verbose >= 2:
        level, slam_level = logging.DEBUG, logging.DEBUG
    elif verbose == 1:
        level, slam_level = logging.INFO, logging.DEBUG
    else:
        level, slam_level = logging.WARNING, logging.INFO
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    logging.getLogger("slam").setLevel(slam_level)
    logging.getLogger("benchmarks").setLevel(slam_level)
    _quiet_opencv(verbose > 0)


def _quiet_opencv(verbose: bool) -> None:
    """Keep OpenCV's own stderr messages out unless -v: our errors already say what failed.

    An ``OPENCV_LOG_LEVEL`` set by the user wins.
    """
    if "OPENCV_LOG_LEVEL" in os.environ:
        return
    level = "WARNING" if verbose else "SILENT"
    os.environ["OPENCV_LOG_LEVEL"] = level  # read when cv2 is first imported
    cv2 = sys.modules.get("cv2")
    set_level = getattr(getattr(getattr(cv2, "utils", None), "logging", None), "setLogLevel", None)
    if set_level is not None:
        set_level(getattr(cv2.utils.logging, f"LOG_LEVEL_{level}"))  # type: ignore[union-attr]


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``slam`` command; return its exit status.

    A :class:`SlamError` becomes ``slam: error: <message>`` on stderr and its
    ``exit_code``; Ctrl-C exits with 130; any other exception is a bug and keeps
    its traceback.
    """
    args = build_parser().parse_args(argv)
    configure_logging(getattr(args, "verbose", 0), getattr(args, "quiet", False))
    try:
        status: int = args.func(args)
    except SlamError as exc:
        log.debug("error details", exc_info=True)
        print(f"slam: error: {_one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("slam: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return status


if __name__ == "__main__":
    sys.exit(main())

"""``slam warmup``: compile the Numba kernels once, so that no run pays for it.

Our kernels are compiled on first use and cached on disk (``cache=True``; in
``NUMBA_CACHE_DIR`` when set, else beside the package or in the user's cache when the
package is not writable). A fresh install would compile them inside its first replay
or its first live frames: tens of seconds in which the system does not keep up. This
command tracks a short rendered scene with every sensor (tracking, local mapping, loop
closing and the final bundle adjustment run as in a real replay), which compiles and
caches every kernel those paths use. ``make run`` calls it first; run it once after
installing or upgrading (``slam warmup``) before ``slam serve`` takes live frames. With a
warm cache it takes a few seconds (loading the cache).
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

log = logging.getLogger(__name__)

SENSORS = ("rgbd", "stereo", "mono")
FRAMES = 40  # frames of the rendered loop per sensor: past initialisation and a few keyframes


def register(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "warmup", parents=parents, help="compile and cache the Numba kernels (once per install)",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument("--sensor", choices=SENSORS, action="append",
                   help="only this sensor (repeatable; default: all three)")
    p.set_defaults(func=execute)


def warm_up(sensors: tuple[str, ...] = SENSORS, frames: int = FRAMES) -> float:
    """Track ``frames`` frames of the rendered loop with each sensor; returns seconds."""
    from slam.config import SlamConfig
    from slam.io.sources import open_source
    from slam.replay import run_offline

    t0 = time.perf_counter()
    for sensor in sensors:
        source = open_source(f"synthetic:loop?n_frames={frames}", sensor)
        run_offline(source, sensor, source.calibration, SlamConfig(),  # type: ignore[arg-type]
                    progress=False)
    return time.perf_counter() - t0


def execute(args: argparse.Namespace) -> int:
    sensors = tuple(args.sensor) if args.sensor else SENSORS
    seconds = warm_up(sensors)
    log.info("Numba kernels compiled and cached for %s in %.1f s", ", ".join(sensors), seconds)
    return 0

"""The offline replay of ``slam run``: a frame source through a :class:`SlamSystem`.

A replay ends when the source does, or early, always between two frames: when a
:class:`ReplayStop` is requested (by SIGINT or SIGTERM through
:func:`stop_on_signals`, or by another thread), or on a data error (a corrupt or
missing frame, :class:`DataSourceError`) when the caller asks for the partial
result. Either way the system finishes (local mapping catches up; no final global
bundle adjustment after an early stop, to keep stopping short) and the poses of
the frames processed so far come back in the :class:`RunResult`.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from slam.camera import Calibration
from slam.config import Sensor, SlamConfig
from slam.dense.worker import DenseOptions, DenseResult
from slam.errors import DataSourceError, SensorError
from slam.events import LoopClosed
from slam.io.sources.base import BoundedReader, FrameSource
from slam.io.timestamps import TimestampGuard
from slam.io.types import SensorFrame, Trajectory
from slam.map.map import Map
from slam.runstats import peak_rss_mb
from slam.status import SystemStatus
from slam.system import SlamSystem
from slam.tracking.state import TrackState

log = logging.getLogger(__name__)

# Why a replay ended (``RunResult.stopped``, ``"stopped"`` in the stats).
COMPLETED = "completed"  # the source ran out of frames
SIGINT = "sigint"  # Ctrl-C
SIGTERM = "sigterm"
DATA_ERROR = "data_error"  # a frame could not be read (the error is in RunResult.error)
REQUESTED = "requested"  # ReplayStop.request() by the program itself

SIGNAL_REASONS = {signal.SIGINT: SIGINT, signal.SIGTERM: SIGTERM}


class ReplayStop:
    """A request to end a replay after the current frame, and why (one of the reasons above).

    Safe to set from a signal handler or another thread; the first reason sticks.
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason: str | None = None

    def request(self, reason: str = REQUESTED) -> None:
        """Ask the replay to stop between frames."""
        if not self.event.is_set():
            self.reason = reason
        self.event.set()

    def is_set(self) -> bool:
        """Whether a stop was requested."""
        return self.event.is_set()


@contextmanager
def stop_on_signals(stop: ReplayStop) -> Iterator[ReplayStop]:
    """Within the block, the first SIGINT or SIGTERM requests ``stop`` and nothing else
    (no ``KeyboardInterrupt`` in the middle of a frame); a second one aborts at once:
    one line on stderr, then the signal's default action. Previous handlers come back
    on exit. Outside the main thread nothing is installed."""

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            _abort(signum)
        stop.request(SIGNAL_REASONS[signal.Signals(signum)])

    previous: dict[signal.Signals, Any] = {}
    try:
        for sig in SIGNAL_REASONS:
            previous[sig] = signal.signal(sig, on_signal)
    except ValueError:  # not the main thread
        pass
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _abort(signum: int) -> None:
    """Die of ``signum`` now (its default action), after one line on stderr."""
    name = signal.Signals(signum).name
    os.write(2, f"\nslam: aborted by a second {name}; nothing more written\n".encode())
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


@dataclass
class RunResult:
    """Outcome of an offline run.

    ``stopped`` says why it ended (``COMPLETED``, ``SIGINT``, ``SIGTERM``,
    ``DATA_ERROR``, ``REQUESTED``); ``error`` is the data error that stopped it;
    ``frames_read`` counts the frames read from the source, skipped ones included.
    """

    trajectory: Trajectory
    stats: dict[str, Any] = field(default_factory=dict)
    track_ms: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    states: list[str] = field(default_factory=list)
    relocalized_frames: list[int] = field(default_factory=list)
    loops: list[LoopClosed] = field(default_factory=list)
    dense: DenseResult | None = None
    stopped: str = COMPLETED
    error: DataSourceError | None = None
    frames_read: int = 0

    @property
    def completed(self) -> bool:
        """Whether every frame of the source was read."""
        return self.stopped == COMPLETED


@dataclass
class _Tally:
    """Per-frame bookkeeping of one replay."""

    track_ms: list[float] = field(default_factory=list)
    states: list[str] = field(default_factory=list)
    n_read: int = 0
    n_tracked: int = 0
    n_lost: int = 0
    n_keyframes: int = 0  # inserted (culling not subtracted): the progress bar's count
    relocalized: list[int] = field(default_factory=list)  # frame ids
    t_start: float = 0.0  # perf_counter when the first frame was asked for
    t_fed: float = 0.0  # ... and when the last one had been tracked


def run_offline(
    source: FrameSource, sensor: Sensor, calibration: Calibration, config: SlamConfig,
    *, realtime: bool = False, progress: bool = True, initial_map: Map | None = None,
    localization_only: bool = False, save_map: str | Path | None = None,
    dense: DenseOptions | None = None, stop: ReplayStop | None = None,
    strict_stamps: bool = False, partial_on_error: bool = False,
) -> RunResult:
    """Replay a source through the system; returns the trajectory and statistics.

    ``initial_map`` continues from a loaded map, ``localization_only`` leaves it
    unchanged, ``save_map`` writes the final map there (only when the replay
    completes), ``dense`` fuses a mesh while running (written after a complete run;
    its time is ``dense_finish_s``, not in ``wall_s``). ``stop`` ends the replay
    after the current frame. Frames whose timestamp does not increase are skipped
    and counted (:class:`TimestampGuard`); ``strict_stamps`` makes the first one a
    :class:`DataSourceError`. A ``DataSourceError`` is raised, unless
    ``partial_on_error``: then the replay ends there and the result holds the
    frames before it, with ``stopped == DATA_ERROR`` and ``error`` set.

    Timing in the stats: ``fps`` counts frames per second of the feeding loop (first
    frame asked for to last frame tracked: ``feed_s``; the ORB-SLAM3 runner counts the
    same way); ``startup_s`` (threads, vocabulary), ``finish_s`` (mapping catching up,
    the final BA, saving) and ``wall_s`` (all of it; ``fps_overall``) are beside it.
    """
    if sensor not in source.sensors:
        raise SensorError(f"source {source.name} cannot feed a {sensor} system "
                          f"(it offers {', '.join(sorted(source.sensors))})")
    t0 = time.perf_counter()
    system = SlamSystem(config, calibration, sensor, initial_map=initial_map,
                        localization_only=localization_only, dense=dense)
    stop = stop or ReplayStop()
    guard = TimestampGuard(str(source.name), strict=strict_stamps)
    tally = _Tally()
    stopped: str | None = None  # stays None when an unexpected exception escapes
    error: DataSourceError | None = None
    tally.t_start = time.perf_counter()
    try:
        _replay(source, system, guard, tally, stop, realtime=realtime, progress=progress,
                queue_size=config.system.frame_queue_size)
        stopped = (stop.reason or REQUESTED) if stop.is_set() else COMPLETED
    except DataSourceError as exc:
        if not partial_on_error:
            raise
        stopped, error = DATA_ERROR, exc
    finally:
        tally.t_fed = time.perf_counter()
        system.finish(final_ba=stopped == COMPLETED)  # an early stop stays short (no mesh)
    assert stopped is not None
    guard.warn()
    if stopped != COMPLETED:
        log.info("replay stopped (%s) after %d frames", stopped, tally.n_read)
    if save_map is not None:
        if stopped == COMPLETED:
            system.save_map(save_map)
        else:
            log.warning("map not saved to %s: the replay did not complete", save_map)
    wall = time.perf_counter() - t0
    dense_result = system.dense_mesh()
    final = system.snapshot()  # trajectory and loops, one look at the map
    stats = _stats(system.status(), tally, guard, wall, dense_result)
    stats |= {"startup_s": tally.t_start - t0, "feed_s": tally.t_fed - tally.t_start,
              "finish_s": t0 + wall - tally.t_fed,
              "fps": len(tally.track_ms) / (tally.t_fed - tally.t_start)
              if tally.t_fed > tally.t_start else 0.0,
              "fps_overall": len(tally.track_ms) / wall if wall > 0 else 0.0,
              "peak_rss_mb": peak_rss_mb(), "stopped": stopped,
              "completed": stopped == COMPLETED, "frames_read": tally.n_read,
              "stages": system.stage_times()}
    return RunResult(final.trajectory, stats, np.array(tally.track_ms), tally.states,
                     tally.relocalized, list(final.loops), dense_result,
                     stopped, error, tally.n_read)


def _replay(
    source: FrameSource, system: SlamSystem, guard: TimestampGuard, tally: _Tally,
    stop: ReplayStop, *, realtime: bool, progress: bool, queue_size: int,
) -> None:
    """Feed the frames of ``source`` to ``system`` until the end or ``stop``."""
    from tqdm import tqdm

    with BoundedReader(iter(source), maxsize=queue_size, realtime=realtime,
                       stop=stop.event) as reader:
        bar = tqdm(reader, total=source.length, disable=not progress, unit="frame",
                   leave=False)
        # As fast as it goes, the next frame's features are made while this one is
        # tracked; in real time a frame is tracked as soon as it arrives (no lookahead).
        frames = _with_next(bar) if not realtime else ((sf, None) for sf in bar)
        try:
            for sf, nxt in frames:
                tally.n_read += 1
                if not guard.admit(sf.timestamp, sf.index):
                    continue
                if nxt is not None:
                    system.prefetch(nxt)
                res = system.process(sf)
                tally.track_ms.append(res.track_ms)
                tally.states.append(res.state.value)
                if res.T_world_cam is not None:
                    tally.n_tracked += 1
                elif res.state == TrackState.LOST:
                    tally.n_lost += 1
                tally.n_keyframes += res.is_keyframe
                if res.relocalized:
                    tally.relocalized.append(res.frame_id)
                bar.set_postfix(state=res.state.value, kf=tally.n_keyframes, refresh=False)
                if stop.is_set():
                    break
        finally:
            bar.close()


def _with_next(frames: Iterable[SensorFrame]
               ) -> Iterator[tuple[SensorFrame, SensorFrame | None]]:
    """Each frame with the one after it (None for the last). An error reading the next
    frame comes after the current one has been yielded, so frames before a corrupt
    one are still processed."""
    it = iter(frames)
    cur = next(it, None)
    while cur is not None:
        try:
            nxt = next(it, None)
        except BaseException:
            yield cur, None
            raise
        yield cur, nxt
        cur = nxt


def _stats(
    status: SystemStatus, tally: _Tally, guard: TimestampGuard, wall: float,
    dense_result: DenseResult | None,
) -> dict[str, Any]:
    """The statistics of a replay (counts, timings, map size, skipped frames)."""
    ms = np.array(tally.track_ms)
    n_frames = len(tally.track_ms)
    stats: dict[str, Any] = {
        "frames": n_frames,
        "tracked_frames": tally.n_tracked,
        "lost_frames": tally.n_lost,
        "frames_duplicate_stamp": guard.counts.duplicate,
        "frames_out_of_order": guard.counts.out_of_order,
        "frames_invalid_stamp": guard.counts.invalid,
        "keyframes": status.keyframes,
        "keyframes_inserted": tally.n_keyframes,
        "map_points": status.map_points,
        "wall_s": wall,
        "track_ms_median": float(np.median(ms)) if len(ms) else 0.0,
        "track_ms_p95": float(np.percentile(ms, 95)) if len(ms) else 0.0,
        "track_ms_p99": float(np.percentile(ms, 99)) if len(ms) else 0.0,
        "local_ba_ms_median": status.local_ba_ms_median,
        "keyframe_ms_median": status.keyframe_ms_median,
        "loops_closed": status.loops_closed,
        "relocalisations": status.relocalisations,
        "maps": status.maps,
    }
    if dense_result is not None:
        stats |= {"dense_keyframes": dense_result.n_keyframes,
                  "dense_vertices": dense_result.n_vertices,
                  "dense_rebuilds": dense_result.rebuilds,
                  "dense_integrate_ms_median": dense_result.integrate_ms_median,
                  "dense_finish_s": dense_result.finish_s}
    return stats

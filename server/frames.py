"""Frames on their way to tracking: the bounded frame queue and the source feeder.

The queue either back-pressures the producer (an offline replay at full speed:
every frame is tracked) or drops its *oldest* frame when full (live cameras,
realtime replays and pushed frames: tracking works on the freshest frames and
memory stays bounded); drops are counted and handed back to the producer so the
sender of a dropped frame can be told.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from slam.io.types import SensorFrame

log = logging.getLogger(__name__)


@dataclass
class Job:
    """A frame and where it came from. ``t_arrival``: ``time.perf_counter()`` when the
    server received it; ``sender``/``envelope``: ZeroMQ routing frames of an ingestion
    client (None for a source frame); ``client_seq``: that client's counter.

    A pushed frame arrives still encoded: ``frame`` is None and ``decode`` makes it, so
    that only the frames tracking takes are decoded (a flood costs the ingestion thread
    a message parse per frame, not an image decode)."""

    frame: SensorFrame | None
    t_arrival: float
    sender: bytes | None = None
    envelope: list[bytes] = field(default_factory=list)
    client_seq: int | None = None
    decode: Callable[[], SensorFrame] | None = None

    def sensor_frame(self) -> SensorFrame:
        """The frame, decoded now if it came encoded (may raise the decoder's error)."""
        if self.frame is None:
            assert self.decode is not None, "a job needs a frame or a decoder"
            self.frame, self.decode = self.decode(), None
        return self.frame


class FrameQueue:
    """A bounded FIFO of :class:`Job`; thread-safe.

    ``drop_oldest=True``: :meth:`put` never blocks and returns the job it pushed out
    (counted in :attr:`drops`). ``drop_oldest=False``: :meth:`put` waits for room.
    :meth:`close` marks the end of the stream; :attr:`finished` is true once closed
    and empty.
    """

    def __init__(self, maxsize: int, drop_oldest: bool) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.maxsize = maxsize
        self.drop_oldest = drop_oldest
        self.drops = 0
        self._items: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, job: Job, stop: threading.Event | None = None) -> Job | None:
        """Queue ``job``; return the dropped oldest job, if any. A blocking put gives up
        (dropping ``job``, returned) when ``stop`` is set or the queue is closed."""
        with self._cond:
            dropped = None
            if self.drop_oldest:
                if len(self._items) >= self.maxsize:
                    dropped = self._items.popleft()
                    self.drops += 1
            else:
                while len(self._items) >= self.maxsize:
                    if self._closed or (stop is not None and stop.is_set()):
                        return job
                    self._cond.wait(0.05)
            self._items.append(job)
            self._cond.notify_all()
            return dropped

    def get(self, timeout: float) -> Job | None:
        """The oldest job, or None after ``timeout`` seconds without one."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            if not self._items:
                return None
            job = self._items.popleft()
            self._cond.notify_all()
            return job

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def finished(self) -> bool:
        with self._cond:
            return self._closed and not self._items

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


def resilient_frames(source: Any, on_error: Any) -> Iterator[SensorFrame]:
    """The frames of ``source``; a frame that fails to load is reported to
    ``on_error(index, exc)`` and skipped.

    Sources with random access (``frame(index)`` and a known length) skip exactly
    the bad frame; for the others a failure ends the stream (a generator cannot
    resume after raising), which is reported the same way.
    """
    length = getattr(source, "length", None)
    frame_at = getattr(source, "frame", None)
    if callable(frame_at) and isinstance(length, int):
        for index in range(length):
            try:
                yield frame_at(index)
            except Exception as exc:
                on_error(index, exc)
        return
    it = iter(source)
    index = 0
    while True:
        try:
            frame = next(it)
        except StopIteration:
            return
        except Exception as exc:
            on_error(index, exc)
            return
        index += 1
        yield frame


class SourceFeeder:
    """A thread that reads a source into a :class:`FrameQueue`, then closes it.

    ``realtime`` releases frames no faster than their timestamps (the queue then
    drops the oldest when tracking falls behind, as with a camera). While ``running``
    (when given) is clear the source is not read: a paused replay loses no frames, and
    pacing starts again from the first frame after the pause.
    """

    def __init__(self, source: Any, queue: FrameQueue, realtime: bool, on_error: Any,
                 running: threading.Event | None = None) -> None:
        self.source = source
        self.queue = queue
        self.realtime = realtime
        self.on_error = on_error
        self.running = running
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="slam-source", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        t0: tuple[float, float] | None = None
        try:
            frames = iter(resilient_frames(self.source, self.on_error))
            while True:
                if self._wait_running():
                    t0 = None  # paused: pace from the next frame on
                if self.stop_event.is_set():
                    return
                frame = next(frames, None)
                if frame is None or self.stop_event.is_set():
                    return
                if self.realtime:
                    t0 = self._pace(frame.timestamp, t0)
                self.queue.put(Job(frame, time.perf_counter()), self.stop_event)
        except Exception as exc:  # a source failing outside a frame read
            self.on_error(-1, exc)
        finally:
            self.queue.close()

    def _wait_running(self) -> bool:
        """Wait while paused (until running or stopped); whether it had to wait."""
        if self.running is None or self.running.is_set():
            return False
        while not self.running.wait(0.1) and not self.stop_event.is_set():
            pass
        return True

    def _pace(self, stamp: float, t0: tuple[float, float] | None) -> tuple[float, float]:
        if t0 is None:
            return time.monotonic(), stamp
        wait = t0[0] + (stamp - t0[1]) - time.monotonic()
        if wait > 0:
            self.stop_event.wait(wait)
        return t0

    def stop(self, timeout: float = 5.0) -> None:
        self.stop_event.set()
        self.queue.close()
        if self.thread.is_alive():
            self.thread.join(timeout)
        close = getattr(self.source, "close", None)
        if callable(close):
            close()

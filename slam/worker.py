"""A keyframe worker: a bounded queue of keyframe ids served by one thread (or inline).

Local mapping and loop closing are both this: the producer submits ids (blocking
while the queue is full: back-pressure, with a deadline), the worker handles them one
by one, a failure in the thread is kept and raised in the producer's next call,
``flush`` waits (on a condition the thread signals) until everything submitted has
been handled and ``wait_backlog`` until the backlog is below a bound.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

log = logging.getLogger(__name__)
_STOP = -1

# How long ``submit`` waits for room in a full queue before it gives up. Room appears
# when the worker finishes a keyframe; a local BA takes a fraction of a second, but
# mapping is paused while loop closing corrects the map or a snapshot is taken, which
# on a large map takes minutes. Far longer than any of that: only a stuck worker hits it.
SUBMIT_TIMEOUT_S = 600.0
# How often a producer blocked on a full queue checks that the worker is still alive
# (a thread that died is reported within this, not at the deadline).
ALIVE_CHECK_S = 0.5
# How long ``stop`` waits for room for its stop mark and then for the thread to end.
STOP_TIMEOUT_S = 30.0


class WorkerStalledError(RuntimeError):
    """The worker took nothing from its full queue for ``submit_timeout_s``, or its
    thread is not running: the producer would otherwise block forever."""


class KeyframeWorker:
    """Subclasses implement :meth:`handle`; ``threaded=False`` handles at submission."""

    def __init__(self, name: str, maxsize: int, threaded: bool,
                 submit_timeout_s: float = SUBMIT_TIMEOUT_S) -> None:
        self.name = name
        self.threaded = threaded
        self.submit_timeout_s = submit_timeout_s
        self.queue: queue.Queue[int] = queue.Queue(maxsize=maxsize)
        # Keyframes submitted and not yet handled, guarded by ``_idle``, whose waiters
        # (``flush``) the thread wakes when it reaches zero or the thread fails.
        self._pending = 0
        self._idle = threading.Condition()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (call at the end of the subclass's ``__init__``)."""
        if self.threaded and self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def handle(self, kf_id: int) -> None:
        raise NotImplementedError

    def on_failure(self) -> None:
        """Called in the thread after :meth:`handle` raised (release waiters)."""

    # --- producer side -----------------------------------------------------------
    def submit(self, kf_id: int) -> None:
        """Queue a keyframe id (handle it now when not threaded).

        Blocks while the queue is full (back-pressure), for at most ``submit_timeout_s``
        seconds; raises :class:`WorkerStalledError` past that or when the thread is not
        running, ``RuntimeError`` (caused by the worker's error) when it failed.
        """
        self.raise_if_failed()
        if not self.threaded:
            self.handle(kf_id)
            return
        with self._idle:
            self._pending += 1
        try:
            self._put(kf_id)
        except BaseException:
            self._handled()
            raise

    def _put(self, kf_id: int) -> None:
        t_end = time.monotonic() + self.submit_timeout_s
        while True:
            remaining = t_end - time.monotonic()
            try:
                self.queue.put(kf_id, timeout=max(0.0, min(ALIVE_CHECK_S, remaining)))
                return
            except queue.Full:
                self.raise_if_failed()
                if self._thread is None or not self._thread.is_alive():
                    raise WorkerStalledError(
                        f"{self.name}: the worker thread is not running") from None
                if remaining <= 0:
                    raise WorkerStalledError(
                        f"{self.name}: queue full for {self.submit_timeout_s:.0f} s "
                        "(the worker is stuck)") from None

    def is_idle(self) -> bool:
        """Whether every submitted keyframe has been handled."""
        return self._pending <= 0

    def queue_depth(self) -> int:
        return self.queue.qsize()

    def wait_backlog(self, max_pending: int, timeout: float = 120.0) -> None:
        """Wait until fewer than ``max_pending`` keyframes are submitted and not yet
        handled (at most ``timeout`` seconds); raises the worker's error."""
        with self._idle:
            self._idle.wait_for(
                lambda: self._pending < max_pending or self._error is not None, timeout)
        self.raise_if_failed()

    def flush(self, timeout: float = 120.0) -> None:
        """Wait until every submitted keyframe has been handled, at most ``timeout``
        seconds (then it returns with work left); raises the worker's error."""
        with self._idle:
            self._idle.wait_for(lambda: self._pending <= 0 or self._error is not None,
                                timeout)
        self.raise_if_failed()

    def stop(self) -> None:
        """End the thread after the keyframes queued before (waits ``STOP_TIMEOUT_S``)."""
        if self._thread is not None and self._thread.is_alive():
            try:
                self.queue.put(_STOP, timeout=STOP_TIMEOUT_S)
            except queue.Full:
                log.warning("%s: queue still full after %.0f s; thread left running",
                            self.name, STOP_TIMEOUT_S)
                return
            self._thread.join(timeout=STOP_TIMEOUT_S)

    def raise_if_failed(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"{self.name} failed") from self._error

    # --- the thread --------------------------------------------------------------
    def _handled(self) -> None:
        with self._idle:
            self._pending -= 1
            self._idle.notify_all()  # flush and wait_backlog waiters check their bound

    def _run(self) -> None:
        while True:
            kf_id = self.queue.get()
            if kf_id == _STOP:
                return
            try:
                self.handle(kf_id)
            except BaseException as exc:  # surfaced to the producer
                log.exception("%s failed on keyframe %d", self.name, kf_id)
                with self._idle:
                    self._error = exc
                    self._idle.notify_all()
                self.on_failure()
                return
            finally:
                self._handled()

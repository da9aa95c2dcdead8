"""A keyframe worker: a bounded queue of keyframe ids served by one thread (or inline).

Local mapping and loop closing are both this: the producer submits ids (blocking
while the queue is full: back-pressure), the worker handles them one by one, a
failure in the thread is kept and raised in the producer's next call, and
``flush`` waits until everything submitted has been handled.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

log = logging.getLogger(__name__)
_STOP = -1


class KeyframeWorker:
    """Subclasses implement :meth:`handle`; ``threaded=False`` handles at submission."""

    def __init__(self, name: str, maxsize: int, threaded: bool) -> None:
        self.name = name
        self.threaded = threaded
        self.queue: queue.Queue[int] = queue.Queue(maxsize=maxsize)
        self._busy = threading.Event()
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
        """Queue a keyframe id (handle it now when not threaded)."""
        self.raise_if_failed()
        if not self.threaded:
            self.handle(kf_id)
            return
        self._busy.set()
        self.queue.put(kf_id)

    def is_idle(self) -> bool:
        return self.queue.empty() and not self._busy.is_set()

    def queue_depth(self) -> int:
        return self.queue.qsize()

    def flush(self, timeout: float = 120.0) -> None:
        """Wait until every submitted keyframe has been handled."""
        t_end = time.monotonic() + timeout
        while not self.is_idle() and time.monotonic() < t_end:
            self.raise_if_failed()
            time.sleep(0.005)
        self.raise_if_failed()

    def stop(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self.queue.put(_STOP)
            self._thread.join(timeout=30)

    def raise_if_failed(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"{self.name} failed") from self._error

    # --- the thread --------------------------------------------------------------
    def _run(self) -> None:
        while True:
            kf_id = self.queue.get()
            if kf_id == _STOP:
                return
            try:
                self._busy.set()
                self.handle(kf_id)
            except BaseException as exc:  # surfaced to the producer
                log.exception("%s failed on keyframe %d", self.name, kf_id)
                self._error = exc
                self.on_failure()
                return
            finally:
                if self.queue.empty():
                    self._busy.clear()

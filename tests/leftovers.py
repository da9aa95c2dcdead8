"""What a test leaves behind: non-daemon threads, child processes and open ZeroMQ
contexts and sockets, found by comparing what exists after a test's teardown with
what existed before its setup (see ``_no_leftovers`` in ``tests/conftest.py``).

ZeroMQ objects are recorded as they are created (``Context.__init__`` and
``Socket.__init__`` are wrapped once per session: a weak reference, a serial number
and the line that created it), so the check costs a few microseconds per test when
nothing is left: no ``gc`` walk unless a socket or context is suspected.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import select
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import zmq

# How long threads and processes that are ending get to finish after a test's teardown
# before they count as left behind (a thread told to stop whose join the test left out
# ends within its poll period; this is far longer, for a loaded one-core machine).
GRACE_S = 5.0
# How long a child process left behind gets after SIGTERM before SIGKILL.
KILL_GRACE_S = 5.0

_ZMQ_DIR = str(Path(zmq.__file__).resolve().parent)
_REPO_ROOT = Path(__file__).resolve().parents[1]


# --- ZeroMQ objects ------------------------------------------------------------------
_serials = itertools.count(1)
_created: weakref.WeakKeyDictionary[Any, tuple[int, str]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def _creation_site() -> str:
    """``path:line in function`` of the first caller outside pyzmq and this module."""
    frame = sys._getframe(2)
    while frame is not None and (frame.f_code.co_filename.startswith(_ZMQ_DIR)
                                 or frame.f_code.co_filename == __file__):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return "?"
    path = Path(frame.f_code.co_filename)
    with contextlib.suppress(ValueError):
        path = path.resolve().relative_to(_REPO_ROOT)
    return f"{path}:{frame.f_lineno} in {frame.f_code.co_name}"


def _recording(init: Callable[..., None]) -> Callable[..., None]:
    def wrapped(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        if not self._shadow:  # a shadow does not own what it wraps
            with _lock:
                _created[self] = (next(_serials), _creation_site())
    wrapped.__wrapped__ = init  # type: ignore[attr-defined]
    return wrapped


def install_zmq_recorder() -> None:
    """Record every ZeroMQ context and socket created from now on (idempotent)."""
    for cls in (zmq.Context, zmq.Socket):
        if not hasattr(cls.__init__, "__wrapped__"):
            cls.__init__ = _recording(cls.__init__)  # type: ignore[method-assign]


def _zmq_serial() -> int:
    with _lock:
        return next(_serials)


def _open_zmq_since(serial: int) -> list[tuple[Any, str]]:
    with _lock:
        items = list(_created.items())
    return [(obj, site) for obj, (n, site) in items if n > serial and not obj.closed]


# --- threads and processes -------------------------------------------------------------
def _multiprocessing_helpers() -> set[int]:
    """Session-long helper processes of ``multiprocessing`` (started on first use)."""
    pids = {getattr(multiprocessing.resource_tracker._resource_tracker, "_pid", None),
            getattr(multiprocessing.forkserver._forkserver, "_forkserver_pid", None)}
    return {p for p in pids if p is not None}


def _descendants() -> list[int]:
    """Pids of this process's children, theirs, ... (Linux: ``/proc/*/task/*/children``,
    a few microseconds; elsewhere psutil, which walks every process)."""
    if not Path(f"/proc/{os.getpid()}/task").is_dir():
        with contextlib.suppress(psutil.Error):
            return [p.pid for p in psutil.Process().children(recursive=True)]
        return []
    found: list[int] = []
    todo = [os.getpid()]
    while todo:
        for path in Path(f"/proc/{todo.pop()}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                kids = [int(pid) for pid in path.read_text().split()]
                found += kids
                todo += kids
    return found


def _children() -> dict[int, psutil.Process]:
    helpers = _multiprocessing_helpers()
    procs = {}
    for pid in _descendants():
        with contextlib.suppress(psutil.Error):
            if pid not in helpers and _running(proc := psutil.Process(pid)):
                procs[pid] = proc
    return procs


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _wait_exit(proc: psutil.Process, timeout: float) -> None:
    """Wait (without reaping it) until ``proc`` ends or ``timeout`` seconds pass."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # no pidfd (old kernel) or already gone
        return
    try:
        select.select([fd], [], [], max(0.0, timeout))
    finally:
        os.close(fd)


def _kill(proc: psutil.Process) -> None:
    with contextlib.suppress(psutil.Error):
        proc.terminate()
        _wait_exit(proc, KILL_GRACE_S)
        if _running(proc):
            proc.kill()


def _describe_process(proc: psutil.Process) -> str:
    try:
        return f"pid {proc.pid}: {' '.join(proc.cmdline())[:200]}"
    except psutil.Error:
        return f"pid {proc.pid}"


def _describe_zmq(obj: Any, site: str) -> str:
    if isinstance(obj, zmq.Context):
        return f"ZeroMQ context created at {site}"
    try:
        kind = zmq.SocketType(obj.type).name
    except (ValueError, zmq.ZMQError):
        kind = "?"
    return f"ZeroMQ {kind} socket created at {site}"


# --- the check ---------------------------------------------------------------------------
@dataclass
class Before:
    """What existed when a test's setup began."""

    threads: set[threading.Thread] = field(default_factory=lambda: set(threading.enumerate()))
    pids: set[int] = field(default_factory=lambda: set(_children()))
    zmq_serial: int = field(default_factory=_zmq_serial)


def leftovers(before: Before, grace_s: float = GRACE_S) -> Iterator[str]:
    """One line per thing created since ``before`` and still there: non-daemon threads
    (after ``grace_s`` seconds to end), child processes (the same grace; then killed, so
    that they do not outlive the run), open ZeroMQ contexts and sockets (after a ``gc``
    pass, which drops those that nothing refers to any more)."""
    deadline = time.monotonic() + grace_s
    for t in threading.enumerate():
        if t not in before.threads and not t.daemon and t is not threading.main_thread():
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                yield f"non-daemon thread {t.name!r}"
    for pid, proc in _children().items():
        if pid in before.pids:
            continue
        _wait_exit(proc, deadline - time.monotonic())
        if _running(proc):
            yield f"child process {_describe_process(proc)} (killed)"
            _kill(proc)
    if _open_zmq_since(before.zmq_serial):
        gc.collect()
        for obj, site in _open_zmq_since(before.zmq_serial):
            yield _describe_zmq(obj, site)

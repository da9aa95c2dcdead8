"""The keyframe worker behind local mapping and loop closing."""

from __future__ import annotations

import threading

import pytest

from slam.worker import KeyframeWorker, WorkerStalledError


class Recorder(KeyframeWorker):
    def __init__(self, threaded: bool, fail_on: int = -2, submit_timeout_s: float = 60.0,
                 gate: threading.Event | None = None) -> None:
        super().__init__("recorder", 4, threaded, submit_timeout_s)
        self.gate = gate  # handle waits for it (a stuck worker while it is clear)
        self.seen: list[int] = []
        self.threads: set[str] = set()
        self.fail_on = fail_on
        self.failed = threading.Event()
        self.start()

    def handle(self, kf_id: int) -> None:
        if self.gate is not None:
            assert self.gate.wait(60), "the test never opened the gate"
        if kf_id == self.fail_on:
            raise ValueError("boom")
        self.seen.append(kf_id)
        self.threads.add(threading.current_thread().name)

    def on_failure(self) -> None:
        self.failed.set()


@pytest.mark.parametrize("threaded", [True, False])
def test_every_submitted_keyframe_is_handled_in_order(threaded: bool) -> None:
    w = Recorder(threaded)
    for k in range(20):  # more than the queue holds: submit blocks, nothing is lost
        w.submit(k)
    w.flush()
    assert w.seen == list(range(20)) and w.is_idle() and w.queue_depth() == 0
    assert w.threads == ({"recorder"} if threaded else {threading.current_thread().name})
    w.stop()


def test_a_failure_in_the_thread_reaches_the_producer() -> None:
    w = Recorder(True, fail_on=3)
    for k in range(4):
        w.submit(k)
    assert w.failed.wait(5)
    with pytest.raises(RuntimeError, match="recorder failed") as info:
        w.submit(9)
    assert isinstance(info.value.__cause__, ValueError)
    with pytest.raises(RuntimeError):
        w.flush()
    assert w.seen == [0, 1, 2]


def test_a_stuck_worker_fails_the_producer_at_the_deadline() -> None:
    gate = threading.Event()
    w = Recorder(True, submit_timeout_s=0.2, gate=gate)
    try:
        for k in range(5):  # one being handled, four queued: the queue is full
            w.submit(k)
        with pytest.raises(WorkerStalledError, match="queue full"):
            w.submit(5)
        w.flush(timeout=0.05)  # returns with work left: no error, nothing handled
        assert not w.is_idle() and w.seen == []
    finally:
        gate.set()
    w.flush()
    assert w.seen == list(range(5)) and w.is_idle()  # the refused keyframe is not pending
    w.stop()


def test_a_stopped_worker_fails_the_producer_instead_of_blocking() -> None:
    w = Recorder(True)
    w.stop()
    for k in range(4):  # the queue takes four more
        w.submit(k)
    with pytest.raises(WorkerStalledError, match="not running"):
        w.submit(4)


def test_flush_is_woken_by_the_last_keyframe() -> None:
    gate = threading.Event()
    w = Recorder(True, gate=gate)
    w.submit(1)
    done = threading.Event()

    def flush() -> None:
        w.flush()
        done.set()

    flusher = threading.Thread(target=flush)
    flusher.start()
    try:
        assert not done.wait(0.05) and not w.is_idle()
    finally:
        gate.set()
        flusher.join(60)
    assert done.is_set() and w.seen == [1]
    w.stop()


class _Stepper(KeyframeWorker):
    """Handles one keyframe per permit (a semaphore the test releases)."""

    def __init__(self) -> None:
        super().__init__("stepper", 8, True)
        self.permits = threading.Semaphore(0)
        self.seen: list[int] = []
        self.start()

    def handle(self, kf_id: int) -> None:
        assert self.permits.acquire(timeout=60), "the test gave no permit"
        self.seen.append(kf_id)


def test_wait_backlog_returns_once_the_backlog_is_below_the_bound() -> None:
    w = _Stepper()
    try:
        for k in range(3):
            w.submit(k)
        w.wait_backlog(4)  # 3 pending < 4: at once
        done = threading.Event()

        def wait() -> None:
            w.wait_backlog(2)
            done.set()

        waiter = threading.Thread(target=wait)
        waiter.start()
        assert not done.wait(0.05)  # 3 pending
        w.permits.release()
        assert not done.wait(0.05)  # one permit: 2 pending, still not below 2
        w.permits.release()
        assert done.wait(60) and len(w.seen) >= 2  # 1 pending: below 2
        waiter.join(60)
    finally:
        for _ in range(3):
            w.permits.release()
        w.stop()
    assert w.seen == [0, 1, 2]

"""The keyframe worker behind local mapping and loop closing."""

from __future__ import annotations

import threading

import pytest

from slam.worker import KeyframeWorker


class Recorder(KeyframeWorker):
    def __init__(self, threaded: bool, fail_on: int = -2) -> None:
        super().__init__("recorder", 4, threaded)
        self.seen: list[int] = []
        self.threads: set[str] = set()
        self.fail_on = fail_on
        self.failed = threading.Event()
        self.start()

    def handle(self, kf_id: int) -> None:
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

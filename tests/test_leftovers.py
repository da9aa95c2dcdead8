"""The leftover check behind every test: what it reports, and what it leaves alone."""

from __future__ import annotations

import subprocess
import sys
import threading
import warnings
from typing import Any

import pytest
import zmq

from tests.leftovers import Before, leftovers


def test_nothing_is_reported_when_everything_is_closed() -> None:
    before = Before()
    ctx: zmq.Context[Any] = zmq.Context()
    sock = ctx.socket(zmq.PAIR)
    worker = threading.Thread(target=lambda: None)
    worker.start()
    worker.join()
    sock.close(0)
    ctx.destroy(linger=0)
    assert list(leftovers(before, grace_s=0.0)) == []


def test_a_running_thread_is_reported_and_a_finishing_one_is_waited_for() -> None:
    before = Before()
    release = threading.Event()
    stuck = threading.Thread(target=release.wait, args=(60,), name="stuck-one")
    ending = threading.Thread(target=lambda: None, name="ending-one")
    stuck.start()
    ending.start()
    try:
        found = list(leftovers(before, grace_s=0.0))
    finally:
        release.set()
        stuck.join(60)
    assert found == ["non-daemon thread 'stuck-one'"]


def test_open_zeromq_objects_are_reported_with_where_they_were_made() -> None:
    before = Before()
    ctx: zmq.Context[Any] = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    closed = ctx.socket(zmq.SUB)
    closed.close(0)
    try:
        found = list(leftovers(before, grace_s=0.0))
    finally:
        ctx.destroy(linger=0)
    here = "tests/test_leftovers.py:"
    assert len(found) == 2 and all(here in line for line in found)
    assert any("context" in line for line in found)
    assert any("PUB socket" in line for line in found)
    assert sock.closed and list(leftovers(before, grace_s=0.0)) == []


def test_objects_nothing_refers_to_are_not_reported() -> None:
    before = Before()
    with warnings.catch_warnings():  # pyzmq closes what nobody refers to, with a warning
        warnings.simplefilter("ignore", ResourceWarning)
        zmq.Context().socket(zmq.PUB)
        assert list(leftovers(before, grace_s=0.0)) == []


def test_a_child_process_is_reported_and_killed() -> None:
    before = Before()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        found = list(leftovers(before, grace_s=0.0))
        assert child.wait(30) != 0  # killed by the check
    finally:
        child.kill()
        child.wait(30)
    assert len(found) == 1 and f"pid {child.pid}" in found[0] and "(killed)" in found[0]


@pytest.mark.keeps_resources("checks that the marker turns the check off")
def test_the_marker_turns_the_check_off(request: pytest.FixtureRequest) -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    request.addfinalizer(lambda: ctx.destroy(linger=0))
    assert request.node.get_closest_marker("keeps_resources") is not None

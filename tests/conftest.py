"""Shared fixtures: where the real datasets live (``<repo>/../shared/datasets``), and
the rules every test runs under.

- **Nothing left behind.** ``_no_leftovers`` (autouse) fails a test whose teardown
  leaves non-daemon threads, child processes or open ZeroMQ contexts/sockets that it
  created (:mod:`tests.leftovers`). A test that must keep something alive past its end
  says so with ``@pytest.mark.keeps_resources("why")``; what it keeps then belongs to
  no test. Wider-scoped fixtures are set up before the check's snapshot, so what they
  hold is not blamed on the test that first used them.
- **A hang ends with every thread's stack.** pytest-timeout (pyproject: ``timeout``,
  thread method) dumps the stacks and stops the run at each test's limit; it needs the
  GIL, so ``faulthandler`` is armed per test at that limit plus
  ``FAULTHANDLER_GRACE_S`` and dumps (and exits) from C even when a stuck extension
  holds the GIL.
"""

from __future__ import annotations

import faulthandler
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from tests.leftovers import Before, install_zmq_recorder, leftovers

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO_ROOT / ".." / "shared" / "datasets"
# faulthandler's dump comes this long after pytest-timeout's limit: only when
# pytest-timeout could not act (its timer thread never got the GIL).
FAULTHANDLER_GRACE_S = 60.0
_STDERR_FD_KEY = pytest.StashKey[int]()


def pytest_configure(config: pytest.Config) -> None:
    # The real stderr (captured output is lost when the process is killed).
    config.stash[_STDERR_FD_KEY] = os.dup(sys.__stderr__.fileno() if sys.__stderr__ else 2)
    install_zmq_recorder()


def pytest_unconfigure(config: pytest.Config) -> None:
    fd = config.stash.get(_STDERR_FD_KEY, None)
    if fd is not None:
        faulthandler.cancel_dump_traceback_later()
        os.close(fd)
        del config.stash[_STDERR_FD_KEY]


def _time_limit_s(item: pytest.Item) -> float:
    """The test's pytest-timeout limit in seconds (0: none)."""
    marker = item.get_closest_marker("timeout")
    if marker is not None and (marker.args or "timeout" in marker.kwargs):
        value = marker.args[0] if marker.args else marker.kwargs["timeout"]
    else:
        try:
            value = item.config.getoption("timeout", None) or item.config.getini("timeout")
        except ValueError:  # pytest-timeout not loaded (-p no:timeout)
            return 0.0
    try:
        return max(0.0, float(value or 0.0))
    except (TypeError, ValueError):
        return 0.0


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    limit = _time_limit_s(item)
    fd = item.config.stash.get(_STDERR_FD_KEY, None)
    if limit <= 0 or fd is None:
        return (yield)
    faulthandler.dump_traceback_later(limit + FAULTHANDLER_GRACE_S, exit=True, file=fd)
    try:
        return (yield)
    finally:
        faulthandler.cancel_dump_traceback_later()


def pytest_enter_pdb() -> None:
    faulthandler.cancel_dump_traceback_later()  # a debugging session has no deadline


@pytest.fixture(autouse=True)
def _no_leftovers(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test if its teardown leaves threads, processes or ZeroMQ objects."""
    if request.node.get_closest_marker("keeps_resources") is not None:
        yield
        return
    before = Before()
    yield
    found = list(leftovers(before))
    if found:
        pytest.fail("the test left behind (close them on every path, in the test or its "
                    "fixtures):\n  " + "\n  ".join(found), pytrace=False)


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The shared dataset folder; skipped locally when absent, a failure in CI (``CI=true``)."""
    if not (SHARED_DATASETS / "README.md").is_file():
        message = f"shared datasets not found at {SHARED_DATASETS}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI=true: the data must be present)")
        pytest.skip(message)
    return SHARED_DATASETS


@pytest.fixture
def ctx() -> Iterator[zmq.Context[Any]]:
    """A ZeroMQ context of the test's own, destroyed (linger 0) whatever the test did."""
    context: zmq.Context[Any] = zmq.Context()
    try:
        yield context
    finally:
        context.destroy(linger=0)

"""CLI tests call ``main()``, which configures logging: undo that after each test."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

import slam.replay
from tests.cli.run_fakes import FakeSystem


@pytest.fixture(autouse=True)
def _restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("OPENCV_LOG_LEVEL", "WARNING")  # main() leaves a user's choice alone
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    named = {name: logging.getLogger(name).level for name in ("slam", "benchmarks")}
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)
    for name, lvl in named.items():
        logging.getLogger(name).setLevel(lvl)


@pytest.fixture
def fake_system(monkeypatch: pytest.MonkeyPatch) -> FakeSystem:
    fake = FakeSystem()
    monkeypatch.setattr(slam.replay, "run_offline", fake.run_offline)
    return fake

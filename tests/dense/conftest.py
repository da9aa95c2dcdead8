"""Fixtures of the dense tests: Open3D (the ``dense`` extra) must be there in CI."""

from __future__ import annotations

from types import ModuleType

import pytest

from tests.dense.helpers import open3d_or_skip


@pytest.fixture(scope="session")
def o3d() -> ModuleType:
    """The ``open3d`` module (see :func:`open3d_or_skip`)."""
    return open3d_or_skip()

"""Shared fixtures: where the real datasets live (``<repo>/../shared/datasets``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO_ROOT / ".." / "shared" / "datasets"


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The shared dataset folder; skipped locally when absent, a failure in CI (``CI=true``)."""
    if not (SHARED_DATASETS / "README.md").is_file():
        message = f"shared datasets not found at {SHARED_DATASETS}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI=true: the data must be present)")
        pytest.skip(message)
    return SHARED_DATASETS

"""Fixtures of the end-to-end tests: one reduced-demo run shared by the workflow and report tests."""

from __future__ import annotations

import pytest
from support.reduced_demo import ResumedRun, run_killed_and_resumed


@pytest.fixture(scope="session")
def resumed_run(tmp_path_factory) -> ResumedRun:
    """One reduced-demo run, killed mid-way and resumed, shared by the end-to-end tests."""
    return run_killed_and_resumed(tmp_path_factory.mktemp("e2e"))

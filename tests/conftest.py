"""Shared fixtures: the repository root and the real slides beside it (../shared/data)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_slides() -> Path:
    """The real slides of ../shared/data/slides; tests using them skip when it is absent."""
    folder = SHARED_DATA / "slides"
    if not folder.is_dir():
        pytest.skip(f"real test slides not found at {folder} (a fresh clone has no ../shared)")
    return folder



@pytest.fixture(scope="session")
def resumed_run(tmp_path_factory):
    """One reduced-demo run, killed mid-way and resumed, shared by the end-to-end tests."""
    from reduced_demo import run_killed_and_resumed

    return run_killed_and_resumed(tmp_path_factory.mktemp("e2e"))


#: The tasks of the reduced demo whose job plans the planner and seed tests compare.
PLAN_TASKS = ["brca_idc_ilc", "surv_brca", "crc100k"]


@pytest.fixture(scope="module")
def demo_raw() -> dict:
    """The demo run config narrowed to three tasks (one per family: slide, survival, tile)."""
    import yaml

    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    raw["tasks"] = PLAN_TASKS
    raw["task_data"] = {t: v for t, v in raw["task_data"].items() if t in PLAN_TASKS}
    return raw

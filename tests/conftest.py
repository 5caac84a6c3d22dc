"""Shared fixtures: the repository root, the real slides beside it (../shared/data), and more.

The test tree mirrors src/pathfuse/ (tests/<subpackage>/test_*.py); tests of top-level modules
and cross-cutting ones sit here, the end-to-end Snakemake runs in tests/workflow/. Helpers shared
between folders live in the ``support`` package (``from support.x import ...``): pytest puts
this folder on sys.path because it holds this conftest.py.
"""

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


@pytest.fixture
def one_thread():
    """Tiny heads: one torch thread (faster, and immune to other jobs crowding the cores)."""
    import torch  # here, not at the top: most tests never need torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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

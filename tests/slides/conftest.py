"""Fixtures for the tiling tests: synthetic slide factory and run-config factory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from support.slides import REPO, synthetic_image, write_pyramid

from pathfuse.config import Config


@pytest.fixture
def make_slide(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_slide(name, width=2048, height=1536, ellipses=..., **write_pyramid kwargs)``."""
    folder = tmp_path / "slides"
    folder.mkdir(exist_ok=True)

    def make(name: str, width: int = 2048, height: int = 1536,
             ellipses: list[tuple[float, float, float, float]] | None = None, seed: int = 0,
             **kwargs: Any) -> Path:
        shapes = [(0.35, 0.5, 0.25, 0.35), (0.75, 0.45, 0.15, 0.3)] if ellipses is None else ellipses
        return write_pyramid(folder / name, synthetic_image(width, height, shapes, seed), **kwargs)

    return make


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Config]:
    """Factory for a run config with one cohort ``c`` used by one slide task (labels given)."""

    def make(cohort: dict[str, Any], labels: list[str] | None = None, **tiling: Any) -> Config:
        labels_csv = tmp_path / "labels.csv"
        if labels is not None:
            pd.DataFrame({"slide_id": labels, "case_id": labels, "label": "IDC"}).to_csv(labels_csv, index=False)
        return Config.from_dict({
            "results_dir": str(tmp_path / "results"),
            "registries": {"tasks": str(REPO / "src" / "pathfuse" / "resources" / "tasks.yaml"),
                           "encoders": str(REPO / "src" / "pathfuse" / "resources" / "encoders.yaml")},
            "encoders": ["demo_vit_a"],
            "tasks": ["brca_idc_ilc"],
            "cohorts": {"c": cohort},
            "task_data": {"brca_idc_ilc": {"cohort": "c", "labels": str(labels_csv),
                                           "splits": str(tmp_path / "splits_{fold}.csv")}},
            "tiling": {"tile_px": 128, "qc_px": 256, **tiling},
        })

    return make

"""Typed, read-only settings of a run: one frozen pydantic model per config section.

``Config.settings`` builds :class:`RunSettings` once from the validated, default-filled config
dict, so library code reads ``cfg.settings.experts.n_seeds`` instead of string keys. The JSON
Schemas stay the one place of defaults and documentation; tests/settings/test_settings.py checks that
each model has exactly its schema's keys.
"""

from __future__ import annotations

from typing import Literal

from pathfuse.settings.base import Number, Settings
from pathfuse.settings.demo import DemoSettings
from pathfuse.settings.embedding import ByoSettings, ByoTileSource, EmbeddingSettings
from pathfuse.settings.experts import (
    ClassificationHead,
    ExpertsSettings,
    HeadsSettings,
    SurvivalHead,
    TileHead,
)
from pathfuse.settings.fusion import (
    ConcatSettings,
    FusionSettings,
    GateSchedule,
    LogitProdConvergedSettings,
    LogitProdSettings,
    ShazamSettings,
    StackingSettings,
)
from pathfuse.settings.inputs import (
    CohortSettings,
    RegistriesSettings,
    TaskDataSettings,
    TileDatasetSettings,
    TridentSettings,
)
from pathfuse.settings.logs import LoggingSettings
from pathfuse.settings.report import ReportSettings
from pathfuse.settings.tiling import TilingSettings


class RunSettings(Settings):
    """The whole run config (config.schema.yaml with its stage sections)."""

    results_dir: str
    seed: int
    registries: RegistriesSettings
    logging: LoggingSettings
    encoders: tuple[str, ...]
    tasks: Literal["all"] | tuple[str, ...]
    cohorts: dict[str, CohortSettings]
    tile_datasets: dict[str, TileDatasetSettings]
    task_data: dict[str, TaskDataSettings]
    demo: DemoSettings
    tiling: TilingSettings
    embedding: EmbeddingSettings
    experts: ExpertsSettings
    fusion: FusionSettings
    report: ReportSettings


__all__ = [
    "ByoSettings", "ByoTileSource", "ClassificationHead", "CohortSettings", "ConcatSettings", "DemoSettings",
    "EmbeddingSettings", "ExpertsSettings", "FusionSettings", "GateSchedule", "HeadsSettings", "LoggingSettings",
    "LogitProdConvergedSettings", "LogitProdSettings", "Number", "RegistriesSettings", "ReportSettings",
    "RunSettings", "Settings", "ShazamSettings", "StackingSettings", "SurvivalHead", "TaskDataSettings",
    "TileDatasetSettings", "TileHead", "TilingSettings", "TridentSettings",
]

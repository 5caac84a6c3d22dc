"""The ``report`` section (sections/report.schema.yaml documents each key)."""

from __future__ import annotations

from typing import Literal

from pathfuse.settings.base import Number, Settings


class ReportSettings(Settings):
    """Stage 3 settings: the bootstrap, the selection metric per task and the rankings."""

    n_bootstrap: int
    ci_level: Number
    #: task id -> metric that overrides the task registry's primary_metric.
    primary_metric: dict[str, str]
    rank_statistic: Literal["mean", "pooled"]
    rank_families: tuple[Literal["expert", "fuser", "baseline", "oracle"], ...]
    cost_reference: str

"""Typed views of one task, cohort or tile dataset, as a run config and the registries give them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pathfuse.kinds import TaskKind, get_kind
from pathfuse.settings import TridentSettings
from pathfuse.settings.inputs import ExternalCohortSettings


@dataclass(frozen=True)
class TaskSpec:
    """One benchmark task: registry facts merged with where the run config keeps its data."""

    id: str
    kind: str
    description: str
    classes: tuple[Any, ...] = ()
    class_names: tuple[str, ...] = ()
    label_column: str | None = None
    time_column: str | None = None
    censorship_column: str | None = None
    n_bins: int = 4
    split: Mapping[str, Any] = field(default_factory=dict)
    metrics: tuple[str, ...] = ()
    primary_metric: str = ""
    cohort: str | None = None
    dataset: str | None = None
    labels: str | None = None
    splits: str | None = None
    encoders: tuple[str, ...] = ()
    # External test cohorts (``task_data.<task>.external``): predicted by the trained models, never trained on.
    external: tuple[ExternalCohortSettings, ...] = ()

    @property
    def kind_strategy(self) -> TaskKind:
        """What the task's kind decides (outputs, targets, loss, metrics, strata): :mod:`pathfuse.kinds`."""
        return get_kind(self.kind)

    @property
    def is_slide_task(self) -> bool:
        """Slide tasks pool tile features into bags; tile tasks classify single tiles."""
        return self.kind_strategy.slide

    @property
    def n_outputs(self) -> int:
        """Logits per sample: classes, or hazard bins for survival."""
        return self.kind_strategy.n_outputs(self)

    @property
    def n_folds(self) -> int:
        """Outer folds of the task's split (``split.n_folds``; 1 when the split gives none)."""
        return int(self.split.get("n_folds", 1))

    @property
    def display_classes(self) -> list[str]:
        """Class names for tables and plots: ``class_names`` when given, else the class values as text."""
        return list(self.class_names) if self.class_names else [str(c) for c in self.classes]


@dataclass(frozen=True)
class CohortSpec:
    """Where a cohort's slides are; exactly one of ``slides`` (glob) or ``manifest`` is set."""

    name: str
    slides: str | None = None
    manifest: str | None = None
    mpp_overrides: str | None = None
    n_shards: int | None = None
    trident: TridentSettings | None = None

    @property
    def has_slides(self) -> bool:
        """False for a features-only cohort (its features are all imported)."""
        return bool(self.slides or self.manifest)


@dataclass(frozen=True)
class TileDatasetSpec:
    """Where a tile dataset is, in which layout, and how its samples group into patients/slides.

    ``groups`` (a sample → group CSV) or ``group_pattern`` (a file-name regex) name each tile's
    patient or slide, so that splits and the bootstrap treat a group as one unit; without them
    (and without a ``group`` column in a features-format label table) every tile is its own unit.
    """

    name: str
    path: str
    format: str
    groups: str | None = None
    group_pattern: str | None = None

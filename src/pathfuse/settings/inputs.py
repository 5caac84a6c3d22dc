"""The top-level pieces that say where a run's data are (config.schema.yaml documents each key)."""

from __future__ import annotations

from typing import Literal

from pathfuse.settings.base import Settings
from pathfuse.settings.embedding import Reader


class RegistriesSettings(Settings):
    """The run's own registry files; ``None`` = the one packaged with pathfuse."""

    tasks: str | None = None
    encoders: str | None = None


class TridentSettings(Settings):
    """Features from a TRIDENT job: ``<root>/features_<model>/<slide_id>.h5`` per encoder."""

    root: str
    #: encoder name -> TRIDENT model name.
    models: dict[str, str]


class CohortSettings(Settings):
    """Where a cohort's slides are: a glob or a manifest, or neither for a features-only cohort."""

    slides: str | None = None
    manifest: str | None = None
    mpp_overrides: str | None = None
    n_shards: int | None = None
    reader: Reader | None = None
    trident: TridentSettings | None = None


class TileDatasetSettings(Settings):
    """Where a tile dataset is, its layout, and how its samples group into patients/slides."""

    path: str
    format: Literal["image_folder", "pcam_hdf5", "features"]
    groups: str | None = None
    group_pattern: str | None = None


class ExternalCohortSettings(Settings):
    """One external test cohort of a task: which cohort, and its label table (None: predictions only)."""

    cohort: str
    labels: str | None = None


class TaskDataSettings(Settings):
    """Per task: where its labels and splits are, and optionally another cohort/dataset."""

    cohort: str | None = None
    dataset: str | None = None
    labels: str | None = None
    splits: str | None = None
    n_folds: int | None = None
    encoders: tuple[str, ...] | None = None
    external: tuple[ExternalCohortSettings, ...] | None = None

"""The ``experts`` section (sections/experts.schema.yaml documents each key)."""

from __future__ import annotations

from typing import Literal

from pathfuse.settings.base import Number, Settings

ClassWeights = Literal["none", "balanced"]


class _Recipe(Settings):
    """What every kind's head recipe has: the head and its training schedule."""

    head: str
    epochs: int
    lr: Number
    weight_decay: Number
    batch_size: int
    patience: int | None
    dropout: Number


class ClassificationHead(_Recipe):
    """Head and training recipe of slide classification (wsi_classification, mutation)."""

    monitor: Literal["loss", "auroc", "balanced_accuracy", "c_index"]
    class_weights: ClassWeights


class SurvivalHead(_Recipe):
    """Head and training recipe of survival tasks."""

    monitor: Literal["loss", "c_index"]
    alpha: Number


class TileHead(_Recipe):
    """Head and training recipe of tile classification (the MLP probe)."""

    monitor: Literal["loss", "auroc", "balanced_accuracy"]
    class_weights: ClassWeights


class HeadsSettings(Settings):
    """One recipe per task kind."""

    wsi_classification: ClassificationHead
    mutation: ClassificationHead
    survival: SurvivalHead
    tile_classification: TileHead


class ExpertsSettings(Settings):
    """Stage 2a settings: one expert per (task, encoder)."""

    bag_unit: Literal["slide", "patient"]
    carve_val: bool
    val_fraction: Number
    inner_folds: int
    n_seeds: int
    on_bad_input: Literal["fail", "skip"]
    max_tiles_per_bag: int | None
    device: Literal["auto", "cpu", "cuda"]
    torch_threads: int | None
    num_workers: int
    features_in_memory_gib: Number
    heads: HeadsSettings

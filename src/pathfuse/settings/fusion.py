"""The ``fusion`` section (sections/fusion.schema.yaml documents each key)."""

from __future__ import annotations

from typing import Literal

from pathfuse.settings.base import Number, Settings

#: Which expert logits a logit-level learner (LogitProd, logitprod_converged, stacking) learns from:
#: out-of-fold training logits (inner-fold experts), the validation split's, or in-sample training logits.
TrainOn = Literal["oof", "val", "in_sample"]


class GateSchedule(Settings):
    """LogitProd's optimiser schedule of one task kind."""

    lr: Number
    weight_decay: Number
    max_epochs: int
    patience: int


class GateSchedules(Settings):
    """LogitProd's schedule per task kind."""

    wsi_classification: GateSchedule
    mutation: GateSchedule
    survival: GateSchedule
    tile_classification: GateSchedule


class LogitProdSettings(Settings):
    """The LogitProd fuser: its gate, correlation penalty and schedules."""

    train_on: TrainOn
    gate_hidden: int
    corr_weight: Number
    corr_shrinkage: Number
    batch_size: int
    by_kind: GateSchedules
    val_folds: int
    val_corr_weights: tuple[Number, ...]
    val_weight_decays: tuple[Number, ...]


class LogitProdConvergedSettings(Settings):
    """LogitProd fitted to convergence over a grid of (corr_weight, weight_decay)."""

    train_on: TrainOn
    corr_weights: tuple[Number, ...]
    weight_decays: tuple[Number, ...]
    max_iter: int
    val_folds: int


class DistilledFuserSettings(Settings):
    """What Shazam and shazam_levels share: distillation toward teacher targets, AdamW, early stopping."""

    distill_target: Literal["linear", "random", "none"]
    distill_weight: Number
    huber_delta: Number
    lr: Number
    weight_decay: Number
    batch_size: int
    max_epochs: int
    patience: int


class ShazamSettings(DistilledFuserSettings):
    """The Shazam fuser (and its Sum / MoE ablations)."""

    dim: int
    n_layers: int
    bag_batch_size: int
    abmil_hidden: int
    abmil_dropout: Number
    max_tiles: int | None


class ShazamLevelsSettings(DistilledFuserSettings):
    """shazam_levels: Shazam with three levels per teacher, as the authors' current code runs it."""

    dim: int
    layers_per_level: int
    gate_hidden: int
    gate_dropout: Number


class ConcatSettings(Settings):
    """Feature concatenation + one head."""

    lr: Number
    tile_lr: Number
    weight_decay: Number
    batch_size: int
    bag_batch_size: int
    max_epochs_classification: int
    max_epochs_survival: int
    max_epochs_tile: int
    patience: int | None
    max_tiles: int | None


class StackingSettings(Settings):
    """Logistic-regression (or linear hazard) stacking of the experts' logits."""

    train_on: TrainOn
    C: Number
    max_iter: int


class FusionSettings(Settings):
    """Stage 2b settings: which fusers and baselines run, and each one's settings."""

    methods: tuple[str, ...]  # names of pathfuse.fusion.FUSERS (plug-ins too): the schema checks them
    logitprod: LogitProdSettings
    logitprod_converged: LogitProdConvergedSettings
    shazam: ShazamSettings
    shazam_levels: ShazamLevelsSettings
    concat: ConcatSettings
    stacking: StackingSettings
    survival_alpha: Number

"""Survival: discrete-time hazards over the fold's time bins (see :mod:`pathfuse.heads.losses`).

A head emits T = ``n_bins`` hazard logits; the bins are cut on each fold's training split, so
targets need the fold's edges and predictions carry them. Metrics read a risk score per
patient, and splits and the bootstrap stratify by the event indicator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from pathfuse.kinds import KINDS
from pathfuse.kinds.base import TaskKind

if TYPE_CHECKING:
    from pathfuse.config import TaskSpec

SURVIVAL_METRICS = ("c_index", "ibs")


@KINDS.register("survival")
class Survival(TaskKind):
    """Time to event with censoring: ``time_column`` and ``censorship_column`` (1 = censored)."""

    time_to_event = True
    has_classes = False
    metrics = SURVIVAL_METRICS
    target_columns = ("time", "event")
    label = "survival"
    stratify_by = "event"
    default_monitor = "c_index"
    early_stopping_score = ("c_index", {"c_index": 1.0})
    training_rules = "pathfuse.heads.kind_training:SurvivalTraining"

    def n_outputs(self, task: TaskSpec) -> int:
        """One hazard logit per time bin."""
        return task.n_bins

    def label_columns(self, task: TaskSpec) -> list[str]:
        """The follow-up time column and the censorship column."""
        return [str(task.time_column), str(task.censorship_column)]

    def row_scores(self, logits: np.ndarray) -> np.ndarray:
        """Per-bin hazards sigmoid(z) (a patient's rows are averaged as hazards)."""
        return 1.0 / (1.0 + np.exp(-logits))

    def unit_scores(self, mean_row_scores: np.ndarray) -> np.ndarray:
        """Risk −Σ_t S_t from a patient's mean hazards (higher = earlier event)."""
        return -np.cumprod(1.0 - mean_row_scores, axis=1).sum(axis=1)

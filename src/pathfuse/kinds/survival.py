"""Survival: discrete-time hazards over the fold's time bins (see :mod:`pathfuse.heads.losses`).

A head emits T = ``n_bins`` hazard logits; the bins are cut on each fold's training split, so
targets need the fold's edges and predictions carry them. Metrics read a risk score per
patient, and splits and the bootstrap stratify by the event indicator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from pathfuse.kinds.base import KINDS, TaskFacts, TaskKind

if TYPE_CHECKING:
    import pandas as pd

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
    undefined_reason = "no event or no admissible pair"
    default_monitor = "c_index"
    early_stopping_score = ("c_index", {"c_index": 1.0})
    training_rules = "pathfuse.heads.kind_training:SurvivalTraining"

    def n_outputs(self, task: TaskFacts) -> int:
        """One hazard logit per time bin."""
        return task.n_bins

    def label_columns(self, task: TaskFacts) -> list[str]:
        """The follow-up time column and the censorship column."""
        return [str(task.time_column), str(task.censorship_column)]

    def row_scores(self, logits: np.ndarray) -> np.ndarray:
        """Per-bin hazards sigmoid(z) (a patient's rows are averaged as hazards)."""
        return 1.0 / (1.0 + np.exp(-logits))

    def unit_scores(self, mean_row_scores: np.ndarray) -> np.ndarray:
        """Risk −Σ_t S_t from a patient's mean hazards (higher = earlier event)."""
        return -np.cumprod(1.0 - mean_row_scores, axis=1).sum(axis=1)

    def mean_nll(self, logits: np.ndarray, rows: pd.DataFrame, bin_edges: Sequence[float] | None,
                 alpha: float) -> float:
        """The discrete-time survival NLL (the experts' training loss) under the fold's bins; NaN without them."""
        if bin_edges is None:
            return math.nan
        edges = np.asarray(bin_edges, dtype=np.float64)
        # The bin of each time, as pathfuse.heads.losses.assign_bins (left-closed, outer bins open).
        bins = np.searchsorted(edges[1:-1], rows["time"].to_numpy(dtype=np.float64), side="right")
        event = rows["event"].to_numpy(dtype=np.float64)
        log_s = np.cumsum(-np.logaddexp(0.0, logits), axis=1)  # log S_t = Σ_{k≤t} log(1 − h_k)
        at = np.arange(len(bins))
        log_s_before = np.where(bins > 0, log_s[at, np.maximum(bins - 1, 0)], 0.0)
        log_h = -np.logaddexp(0.0, -logits[at, bins])
        uncensored = -event * (log_s_before + log_h)
        censored = -(1.0 - event) * log_s[at, bins]
        return float(np.mean((1.0 - alpha) * (uncensored + censored) + alpha * uncensored))

"""Classification kinds: one label per sample out of ``classes``, learned with cross-entropy.

WSI classification and mutation prediction are slide tasks (bags of tiles per slide or
patient); tile classification scores single tiles. They differ only in that.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from pathfuse.kinds.base import KINDS, TaskFacts, TaskKind

if TYPE_CHECKING:
    import pandas as pd

#: The metrics ``pathfuse.evaluation.metrics`` computes from class probabilities (``binary_f1``: binary tasks).
CLASSIFICATION_METRICS = ("auroc", "balanced_accuracy", "accuracy", "macro_f1", "weighted_f1", "binary_f1")


class ClassificationKind(TaskKind):
    """Class logits [K]; metrics read the softmax probabilities; strata are the classes."""

    metrics = CLASSIFICATION_METRICS
    undefined_reason = "fewer than two classes"
    training_rules = "pathfuse.heads.kind_training:ClassificationTraining"

    def n_outputs(self, task: TaskFacts) -> int:
        """One logit per class."""
        return len(task.classes)

    def label_columns(self, task: TaskFacts) -> list[str]:
        """The one column that holds the class label."""
        return [str(task.label_column)]

    def row_scores(self, logits: np.ndarray) -> np.ndarray:
        """Class probabilities (softmax, shifted by the row maximum for stability)."""
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def scored_metrics(self, task: TaskFacts) -> list[str]:
        """The task's metrics, plus ``binary_f1`` (the published code's F1) beside macro F1 on binary tasks."""
        metrics = list(task.metrics)
        if len(task.classes) == 2 and "binary_f1" not in metrics:
            metrics.append("binary_f1")
        return metrics

    def mean_nll(self, logits: np.ndarray, rows: pd.DataFrame, bin_edges: Sequence[float] | None,
                 alpha: float) -> float:
        """Cross-entropy of the class logits (the experts' training loss without class weights)."""
        top = logits.max(axis=1, keepdims=True)
        log_z = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
        labels = rows["label"].to_numpy(dtype=np.int64)
        return float(np.mean(log_z - logits[np.arange(len(labels)), labels]))


@KINDS.register("wsi_classification")
class WsiClassification(ClassificationKind):
    """A slide-level diagnosis (e.g. a BRACS subtype) from the slide's tiles."""

    label = "WSI"


@KINDS.register("mutation")
class Mutation(ClassificationKind):
    """A gene's mutation status (e.g. TP53) from the slide's tiles."""

    label = "mutation"


@KINDS.register("tile_classification")
class TileClassification(ClassificationKind):
    """The class of a single tile (e.g. a tissue type); groups only tie tiles together."""

    slide = False
    label = "tile"

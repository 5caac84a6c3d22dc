"""Classification kinds: one label per sample out of ``classes``, learned with cross-entropy.

WSI classification and mutation prediction are slide tasks (bags of tiles per slide or
patient); tile classification scores single tiles. They differ only in that.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from pathfuse.kinds import KINDS
from pathfuse.kinds.base import TaskKind

if TYPE_CHECKING:
    from pathfuse.config import TaskSpec

#: The metrics ``pathfuse.evaluation.metrics`` computes from class probabilities (``binary_f1``: binary tasks).
CLASSIFICATION_METRICS = ("auroc", "balanced_accuracy", "accuracy", "macro_f1", "weighted_f1", "binary_f1")


class ClassificationKind(TaskKind):
    """Class logits [K]; metrics read the softmax probabilities; strata are the classes."""

    metrics = CLASSIFICATION_METRICS
    training_rules = "pathfuse.heads.kind_training:ClassificationTraining"

    def n_outputs(self, task: TaskSpec) -> int:
        """One logit per class."""
        return len(task.classes)

    def label_columns(self, task: TaskSpec) -> list[str]:
        """The one column that holds the class label."""
        return [str(task.label_column)]

    def row_scores(self, logits: np.ndarray) -> np.ndarray:
        """Class probabilities (softmax, shifted by the row maximum for stability)."""
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)


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

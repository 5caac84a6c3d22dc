"""What a head is trained on, per task kind: target arrays, loss, and the validation monitor.

The rules themselves belong to the task kind (:mod:`pathfuse.kinds`; the built-in torch side
is :mod:`pathfuse.heads.kind_training`). :class:`Objective` binds a kind to one fold's
survival bin edges, which is the shape the experts' trainer uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import torch

from pathfuse.kinds import KindTraining, LossFn, MonitorFn, get_kind


@dataclass(frozen=True)
class Objective:
    """Targets and loss of one task kind; ``edges`` are the fold's survival bin edges."""

    kind: str
    edges: np.ndarray | None = None

    @cached_property
    def rules(self) -> KindTraining:
        """The kind's training rules."""
        return get_kind(self.kind).training()

    def targets(self, samples: pd.DataFrame) -> dict[str, np.ndarray]:
        """Target arrays aligned with ``samples`` (rows of ``load_samples``)."""
        return self.rules.targets(samples, self.edges)

    def loss(self, alpha: float = 0.4, class_weights: torch.Tensor | None = None) -> LossFn:
        """``(outputs, batch) -> loss`` for :func:`pathfuse.training.fit`."""
        return self.rules.loss(alpha, class_weights)


def monitor_fn(monitor: str, kind: str) -> MonitorFn:
    """Validation metric over samples, for checkpoint choice (reported metrics are per patient).

    One of task kind ``kind``'s monitors; KeyError (listing them) for a name the kind lacks.
    """
    return get_kind(kind).training().monitor(monitor)

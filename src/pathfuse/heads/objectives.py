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

from pathfuse.heads.kind_training import ClassificationTraining, SurvivalTraining
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


def monitor_fn(monitor: str, kind: str | None = None) -> MonitorFn:
    """Validation metric over samples, for checkpoint choice (reported metrics are per patient).

    With ``kind``, that kind's monitors; without, any built-in monitor (survival's c-index,
    the classification scores), as the config schema allows them per kind.
    """
    if kind is not None:
        return get_kind(kind).training().monitor(monitor)
    monitors = {**SurvivalTraining.monitors, **ClassificationTraining.monitors}
    if monitor not in monitors:
        raise KeyError(f"unknown validation monitor {monitor!r}; known: loss, {', '.join(monitors)}")
    return monitors[monitor]

"""What a head is trained on, per task kind: target arrays, loss, and the validation monitor.

Classification heads learn class indices with cross-entropy. Survival heads learn the bin of
each time (bins cut on the fold's training split) and the event flag with the discrete-time
NLL; the raw time travels along so that the validation c-index can be computed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from pathfuse.evaluation.metrics import auroc, concordance
from pathfuse.heads.losses import assign_bins, cross_entropy, survival_nll, survival_risk

LossFn = Callable[[torch.Tensor, Mapping[str, torch.Tensor]], torch.Tensor]
MonitorFn = Callable[[torch.Tensor, Mapping[str, torch.Tensor]], float]


@dataclass(frozen=True)
class Objective:
    """Targets and loss of one task kind; ``edges`` are the fold's survival bin edges."""

    kind: str
    edges: np.ndarray | None = None

    @property
    def survival(self) -> bool:
        return self.kind == "survival"

    def targets(self, samples: pd.DataFrame) -> dict[str, np.ndarray]:
        """Target arrays aligned with ``samples`` (rows of ``load_samples``)."""
        if self.survival:
            return {
                "bin": assign_bins(samples["time"].to_numpy(), self.edges),
                "event": samples["event"].to_numpy(np.int64),
                "time": samples["time"].to_numpy(np.float64),
            }
        return {"label": samples["label"].to_numpy(np.int64)}

    def loss(self, alpha: float = 0.4, class_weights: torch.Tensor | None = None) -> LossFn:
        """``(outputs, batch) -> loss`` for :func:`pathfuse.training.fit`."""
        if self.survival:
            return lambda out, batch: survival_nll(out, batch["bin"], batch["event"], alpha)
        return lambda out, batch: cross_entropy(out, batch["label"], class_weights)


def monitor_fn(monitor: str) -> MonitorFn:
    """Validation metric over samples, for checkpoint choice (reported metrics are per patient)."""

    def c_index(out: torch.Tensor, t: Mapping[str, torch.Tensor]) -> float:
        return concordance(t["time"].numpy(), survival_risk(out).numpy(), t["event"].numpy())

    def auc(out: torch.Tensor, t: Mapping[str, torch.Tensor]) -> float:
        return auroc(t["label"].numpy(), torch.softmax(out, dim=1).numpy())

    def balanced(out: torch.Tensor, t: Mapping[str, torch.Tensor]) -> float:
        y, pred = t["label"].numpy(), out.argmax(dim=1).numpy()
        return float(np.mean([(pred[y == c] == c).mean() for c in np.unique(y)]))

    monitors = {"c_index": c_index, "auroc": auc, "balanced_accuracy": balanced}
    if monitor not in monitors:
        raise KeyError(f"unknown validation monitor {monitor!r}; known: loss, {', '.join(monitors)}")
    return monitors[monitor]

"""The torch side of the built-in task kinds (:class:`pathfuse.kinds.KindTraining`).

Classification heads learn class indices with cross-entropy. Survival heads learn the bin of
each time (bins cut on the fold's training split) and the event flag with the discrete-time
NLL; the raw time travels along so that the validation c-index can be computed. The kinds in
:mod:`pathfuse.kinds` name these classes; they live here because they need torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from pathfuse.evaluation.metrics import auroc, concordance
from pathfuse.heads.losses import (
    assign_bins,
    cross_entropy,
    event_distribution_to_hazards,
    hazards_to_event_distribution,
    survival_nll,
    survival_risk,
)
from pathfuse.kinds import LossFn, MonitorFn


def _lookup(monitors: Mapping[str, MonitorFn], name: str) -> MonitorFn:
    if name not in monitors:
        raise KeyError(f"unknown validation monitor {name!r}; known: loss, {', '.join(monitors)}")
    return monitors[name]


def auroc_monitor(out: torch.Tensor, t: Mapping[str, torch.Tensor]) -> float:
    """Per-sample AUROC of the softmax probabilities."""
    return auroc(t["label"].numpy(), torch.softmax(out, dim=1).numpy())


def balanced_accuracy_monitor(out: torch.Tensor, t: Mapping[str, torch.Tensor]) -> float:
    """Per-sample balanced accuracy of the argmax predictions."""
    y, pred = t["label"].numpy(), out.argmax(dim=1).numpy()
    return float(np.mean([(pred[y == c] == c).mean() for c in np.unique(y)]))


def c_index_monitor(out: torch.Tensor, t: Mapping[str, torch.Tensor]) -> float:
    """Per-sample c-index of the risk −Σ_t S_t."""
    return concordance(t["time"].numpy(), survival_risk(out).numpy(), t["event"].numpy())


class ClassificationTraining:
    """Class indices, cross-entropy (optionally class-weighted), softmax distributions."""

    monitors: Mapping[str, MonitorFn] = {"auroc": auroc_monitor, "balanced_accuracy": balanced_accuracy_monitor}

    def targets(self, samples: pd.DataFrame, edges: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Class indices of ``samples`` (``edges`` is unused: classes need no bins)."""
        return {"label": samples["label"].to_numpy(np.int64)}

    def block_targets(self, block: Any) -> dict[str, torch.Tensor]:
        """A fusion block's class indices, as the loss reads them."""
        return {"label": torch.as_tensor(block.label, dtype=torch.long)}

    def loss(self, alpha: float = 0.4, class_weights: torch.Tensor | None = None) -> LossFn:
        """Cross-entropy, weighted per class when given (``alpha`` belongs to survival, unused here)."""
        return lambda out, batch: cross_entropy(out, batch["label"], class_weights)

    def monitor(self, name: str) -> MonitorFn:
        """The classification monitor called ``name``; KeyError (listing the known ones) otherwise."""
        return _lookup(self.monitors, name)

    def log_distribution(self, logits: torch.Tensor) -> torch.Tensor:
        """Class logits → log class probabilities (log-softmax)."""
        return F.log_softmax(logits, dim=-1)

    def output_logits(self, log_q: torch.Tensor) -> torch.Tensor:
        """Log class probabilities are valid logits already (softmax gives them back)."""
        return log_q


class SurvivalTraining:
    """Time bins and events, the discrete-time NLL, event distributions over T+1 outcomes."""

    monitors: Mapping[str, MonitorFn] = {"c_index": c_index_monitor}

    def targets(self, samples: pd.DataFrame, edges: np.ndarray | None) -> dict[str, np.ndarray]:
        """Each sample's time bin under the fold's ``edges``, its event flag and its raw time.

        The raw time travels along because the validation c-index ranks times, not bins.
        """
        if edges is None:
            raise ValueError("survival targets need the fold's time-bin edges")
        return {
            "bin": assign_bins(samples["time"].to_numpy(), edges),
            "event": samples["event"].to_numpy(np.int64),
            "time": samples["time"].to_numpy(np.float64),
        }

    def block_targets(self, block: Any) -> dict[str, torch.Tensor]:
        """A fusion block's time bins and event flags, as the survival NLL reads them."""
        return {"bin": torch.as_tensor(block.bin_index, dtype=torch.long),
                "event": torch.as_tensor(block.event, dtype=torch.float32)}

    def loss(self, alpha: float = 0.4, class_weights: torch.Tensor | None = None) -> LossFn:
        """The discrete-time NLL, ``alpha`` weighting the extra uncensored term (no class weights here)."""
        return lambda out, batch: survival_nll(out, batch["bin"], batch["event"], alpha)

    def monitor(self, name: str) -> MonitorFn:
        """The survival monitor called ``name``; KeyError (listing the known ones) otherwise."""
        return _lookup(self.monitors, name)

    def log_distribution(self, logits: torch.Tensor) -> torch.Tensor:
        """Hazard logits [..., T] → the log event distribution over T+1 outcomes (bins, survived)."""
        return hazards_to_event_distribution(logits, log=True)

    def output_logits(self, log_q: torch.Tensor) -> torch.Tensor:
        """A log event distribution over T+1 outcomes → hazard logits [..., T]."""
        return event_distribution_to_hazards(log_q, log=True)

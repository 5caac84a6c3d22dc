"""The one rule that picks "the best single expert" of a fold, on validation data only.

Two places need that choice: the ``best_val_expert`` baseline (``pathfuse.fusion.baselines``)
and the reference every gain is measured against (``pathfuse.evaluation``). They call this
module with the same inputs, so they always pick the same expert and the gain of
``best_val_expert`` over the reference is 0 by construction. The rule:

1. Score every expert on the fold's validation rows that *all* experts have (the rows a
   fusion method sees), sorted by sample id, with the selection metric — the task's primary
   metric (``report.primary_metric.<task>``, else the task registry's), the metric the gain is
   reported in.
2. Best value first; an undefined value (e.g. one class in a small validation set) ranks
   below every defined one. Values equal to 10 decimals are a tie.
3. Ties and undefined values are broken by the mean validation NLL (lower first), then by the
   experts' order in the config. So when every expert's metric is undefined, the fallback is
   the expert with the lowest validation NLL.

Nothing here imports torch: the evaluation stage stays light.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pathfuse.config import Config, ConfigError, TaskSpec
from pathfuse.evaluation.metrics import HIGHER_IS_BETTER, score

#: Values closer than this many decimals are a tie (float noise of identical predictions).
TIE_DECIMALS = 10


def primary_metric(cfg: Config, task: TaskSpec) -> str:
    """The task's primary metric — ranked, reported as the gain, and used to select experts.

    ``report.primary_metric.<task>`` overrides the registry's ``primary_metric``; it is the
    only key that decides the selection metric (``fusion.selection_metric`` was removed; see
    pathfuse.settings.retired).
    """
    metric = cfg.settings.report.primary_metric.get(task.id) or task.primary_metric
    if metric not in task.metrics:
        raise ConfigError(
            f"report.primary_metric.{task.id}: {metric!r} is not one of the task's metrics "
            f"{list(task.metrics)}; pick one of them"
        )
    return metric


@dataclass(frozen=True)
class ExpertScore:
    """One expert's validation facts on a fold; ``index`` is its position in the config order."""

    encoder: str
    index: int
    metric: str
    value: float
    nll: float
    n_samples: int

    def as_dict(self) -> dict[str, Any]:
        """The score as plain data, for the ranking a metrics or fusion file records in its metadata."""
        return {"encoder": self.encoder, "index": self.index, "metric": self.metric, "value": self.value,
                "nll": self.nll, "n_samples": self.n_samples}


def rank_experts(task: TaskSpec, frames: Mapping[str, pd.DataFrame], order: Sequence[str], metric: str,
                 bin_edges: Sequence[float] | None, alpha: float) -> list[ExpertScore]:
    """Rank the experts of one fold on one split, best first (the module docstring's rule).

    Args:
        task: the task (kind, classes).
        frames: expert → its prediction rows of this fold and split (``predictions`` shape).
            An expert absent here is not eligible.
        order: the experts in config order (the last tie-breaker).
        metric: the selection metric (:func:`primary_metric`).
        bin_edges: survival: the fold's bin edges (for the NLL and the IBS); else None.
        alpha: the survival NLL's α (``fusion.survival_alpha``).
    """
    if not frames:
        return []
    shared = set.intersection(*(set(df["sample_id"].astype(str)) for df in frames.values()))
    sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
    scored = []
    for name, df in frames.items():
        rows = df[df["sample_id"].astype(str).isin(shared)].sort_values("sample_id", kind="stable")
        if rows.empty:
            continue
        value = score(task, rows, [metric], bin_edges=bin_edges)[metric]
        scored.append(ExpertScore(name, list(order).index(name), metric, value,
                                  mean_nll(task, rows, bin_edges, alpha), len(rows)))

    def key(s: ExpertScore) -> tuple[float, float, int]:
        value = -math.inf if math.isnan(s.value) else round(sign * s.value, TIE_DECIMALS)
        nll = math.inf if math.isnan(s.nll) else round(s.nll, TIE_DECIMALS)
        return (-value, nll, s.index)

    return sorted(scored, key=key)


def mean_nll(task: TaskSpec, rows: pd.DataFrame, bin_edges: Sequence[float] | None, alpha: float) -> float:
    """Mean per-row validation NLL under the task's kind.

    Classification: cross-entropy of the class logits; survival: the discrete-time NLL, the experts'
    training loss, under the fold's bins.
    """
    logits = np.stack([np.asarray(v, dtype=np.float64) for v in rows["logits"]])
    return task.kind_strategy.mean_nll(logits, rows, bin_edges, alpha)

"""Classification and survival metrics on prediction tables, with patient-level bootstrap CIs.

Every stage after the experts scores predictions here, so experts, fusers and baselines are
measured identically. Input rows have the ``predictions`` contract shape (docs/architecture.md):
``patient_id``, ``label`` or ``time``/``event``, and ``logits``.

Slide-task metrics are per patient: rows are first averaged per patient (class probabilities =
mean of the rows' softmax; hazards = mean of the rows' sigmoid), because a patient with three
slides must not count three times. (Rows of one patient that carry *different* labels, e.g.
BRACS lesions, stay separate units but are still resampled together.) Tile tasks are scored
per tile, as the papers do; their ``patient_id`` (the dataset's group) only ties tiles together
in the bootstrap.

* ``auroc``: binary on the positive class (``classes[1]``); multiclass one-vs-rest macro
  average. Classes absent from the evaluated labels are left out of the macro average (with a
  warning), where scikit-learn would raise; with every class present the value is exactly
  scikit-learn's.
* ``balanced_accuracy``, ``accuracy``, ``macro_f1``, ``weighted_f1``: on argmax predictions.
* ``binary_f1``: binary tasks only, F1 of the positive class (``classes[1]``) — scikit-learn's
  ``f1_score`` default, which the published code reports; 0 when the class is neither present
  nor predicted (scikit-learn's ``zero_division`` value).
* ``c_index``: Harrell's concordance (lifelines) with risk = −Σ_t S(t).
* ``ibs``: integrated Brier score (Graf et al. 1999) with inverse-probability-of-censoring
  weights from the Kaplan-Meier censoring curve of the evaluated samples (as pycox does), on
  a grid of the evaluated event times below the largest time. A patient's survival curve S(t)
  is piecewise linear inside each time bin (constant event density within a bin) between the
  bin edges the expert was trained with, so ``bin_edges`` is required for it. Lower is better.

An undefined metric (one class present, no events, too few samples) is NaN with a logged
warning; it never stops a run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from pathfuse import progress
from pathfuse.config import TaskSpec
from pathfuse.evaluation.classification import CLASSIFICATION_KERNELS, auroc_arrays
from pathfuse.evaluation.survival import SURVIVAL_KERNELS, c_index_arrays
from pathfuse.evaluation.units import BinEdges, UndefinedMetric, Units, aggregate, required
from pathfuse.kinds.classification import CLASSIFICATION_METRICS

log = logging.getLogger(__name__)

#: Direction of each metric, for ranking and "best expert" choices.
HIGHER_IS_BETTER: dict[str, bool] = {
    **dict.fromkeys(CLASSIFICATION_METRICS, True),
    "c_index": True,
    "ibs": False,
}


# ----------------------------------------------------------------------------- public API
def score(
    task: TaskSpec, preds: pd.DataFrame, metrics: Sequence[str] | None = None, bin_edges: BinEdges = None
) -> dict[str, float]:
    """Score prediction rows (already filtered to one fold/split, or pooled) → {metric: value}.

    Args:
        task: the task (kind, classes, default metrics).
        preds: rows in the ``predictions`` shape.
        metrics: names to compute (default: ``task.metrics``).
        bin_edges: survival only, for ``ibs``: one edge list for all rows, or {fold: edges}
            (the ``bin_edges`` of a predictions file's metadata; keys may be str or int).
    """
    metrics = _check_metrics(task, metrics)
    units = aggregate(task, preds, bin_edges, need_curves="ibs" in metrics)
    if "auroc" in metrics and units.probs is not None and units.probs.shape[1] > 2:
        absent = sorted(set(range(units.probs.shape[1])) - set(required(units.label, "label").tolist()))
        if absent:
            log.warning(
                "task %s: class index(es) %s absent from the scored labels; auroc is the "
                "one-vs-rest macro over the classes present",
                task.id,
                absent,
            )
    return compute(units, np.arange(len(units.patient)), metrics, task, quiet=False)


def bootstrap_ci(
    task: TaskSpec,
    preds: pd.DataFrame,
    metrics: Sequence[str] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    bin_edges: BinEdges = None,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap CI of each metric, resampling patients with replacement.

    All rows of a resampled patient enter together, so the CI reflects patient-level
    uncertainty. Resamples where a metric is undefined are left out of its percentiles.
    """
    metrics = _check_metrics(task, metrics)
    units = aggregate(task, preds, bin_edges, need_curves="ibs" in metrics)
    draws = _resample_indices(units, n_resamples, seed)
    values = {m: np.empty(n_resamples) for m in metrics}
    tick = progress.current().tick  # the job's log: resample b of B when a line is due
    for b, idx in enumerate(draws):
        for m, v in compute(units, idx, metrics, task, quiet=True).items():
            values[m][b] = v
        tick(b + 1, n_resamples, "resample")
    return {m: percentiles(v, level, m) for m, v in values.items()}


def concordance(time: np.ndarray, risk: np.ndarray, event: np.ndarray) -> float:
    """Harrell's c-index of per-sample risks, NaN when undefined.

    Equals lifelines' ``concordance_index(time, -risk, event)``. Used for checkpoint choice, where
    rows are samples, not patients, and an undefined value must not stop training.
    """
    try:
        return c_index_arrays(np.asarray(time, float), np.asarray(event, int), np.asarray(risk, float))
    except UndefinedMetric:
        return float("nan")


def auroc(labels: np.ndarray, probs: np.ndarray) -> float:
    """AUROC of per-sample class probabilities [n, C], NaN when undefined.

    Binary tasks score the positive class, others the one-vs-rest macro mean. Used for checkpoint
    choice, where an undefined value must not stop training.
    """
    try:
        return auroc_arrays(np.asarray(labels, int), np.asarray(probs, float))
    except UndefinedMetric:
        return float("nan")


# ----------------------------------------------------------------------------- aggregation
def _check_metrics(task: TaskSpec, metrics: Sequence[str] | None) -> list[str]:
    metrics = list(metrics or task.metrics)
    allowed = task.kind_strategy.metrics
    bad = [m for m in metrics if m not in allowed]
    if bad:
        raise ValueError(f"task {task.id} ({task.kind}): unknown metric(s) {bad}; allowed: {list(allowed)}")
    return metrics


# ----------------------------------------------------------------------------- computation
def _resample_indices(units: Units, n_resamples: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        units.units_of(rng.integers(0, units.n_patients, size=units.n_patients)) for _ in range(n_resamples)
    ]


def compute(
    units: Units, idx: np.ndarray, metrics: Sequence[str], task: TaskSpec, quiet: bool
) -> dict[str, float]:
    """Each metric on the units ``idx`` (with multiplicity); NaN where undefined, logged unless ``quiet``."""
    out = {}
    for m in metrics:
        try:
            out[m] = float(_METRIC_FNS[m](units, idx))
        except UndefinedMetric as err:
            if not quiet:
                log.warning("task %s: %s is undefined here (%s); recording NaN", task.id, m, err)
            out[m] = float("nan")
    return out


def percentiles(values: np.ndarray, level: float, metric: str) -> tuple[float, float]:
    """Percentile interval of bootstrap values at ``level``, undefined (NaN) resamples left out."""
    valid = values[~np.isnan(values)]
    if valid.size < len(values):
        log.warning(
            "%s undefined in %d of %d bootstrap resamples (left out)",
            metric,
            len(values) - valid.size,
            len(values),
        )
    if not valid.size:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(valid, [tail, 100 - tail])
    return float(low), float(high)


_METRIC_FNS: dict[str, Callable[[Units, np.ndarray], float]] = {**CLASSIFICATION_KERNELS, **SURVIVAL_KERNELS}

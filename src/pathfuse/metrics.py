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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from pathfuse.config import TaskSpec

log = logging.getLogger(__name__)

CLASSIFICATION_METRICS = ("auroc", "balanced_accuracy", "accuracy", "macro_f1", "weighted_f1", "binary_f1")
SURVIVAL_METRICS = ("c_index", "ibs")
#: Direction of each metric, for ranking and "best expert" choices.
HIGHER_IS_BETTER: dict[str, bool] = {
    **{m: True for m in CLASSIFICATION_METRICS},
    "c_index": True,
    "ibs": False,
}

BinEdges = Sequence[float] | Mapping[Any, Sequence[float]] | None


@dataclass(frozen=True)
class Units:
    """Predictions reduced to one unit per patient (arrays aligned by unit).

    Bootstraps resample patient codes and score the units of the picked patients
    (:meth:`units_of`), so a patient's rows always enter a resample together."""

    patient: np.ndarray  # patient code per unit (int)
    n_patients: int
    label: np.ndarray | None = None  # classification
    probs: np.ndarray | None = None
    time: np.ndarray | None = None  # survival
    event: np.ndarray | None = None
    risk: np.ndarray | None = None
    curves: np.ndarray | None = None  # [units, grid] survival curves, or None without bin edges
    grid: np.ndarray | None = None

    @cached_property
    def _by_patient(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        order = np.argsort(self.patient, kind="stable")
        counts = np.bincount(self.patient, minlength=self.n_patients)
        return order, np.cumsum(counts) - counts, counts

    def units_of(self, picked_patients: np.ndarray) -> np.ndarray:
        """Unit indices of (re)sampled patient codes, with multiplicity (vectorised)."""
        order, starts, counts = self._by_patient
        lengths = counts[picked_patients]
        offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return order[np.repeat(starts[picked_patients], lengths) + offsets]


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
        absent = sorted(set(range(units.probs.shape[1])) - set(units.label.tolist()))
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
    for b, idx in enumerate(draws):
        for m, v in compute(units, idx, metrics, task, quiet=True).items():
            values[m][b] = v
    return {m: percentiles(v, level, m) for m, v in values.items()}


def concordance(time: np.ndarray, risk: np.ndarray, event: np.ndarray) -> float:
    """Harrell's c-index of per-sample risks (= lifelines' ``concordance_index(time, -risk, event)``);
    NaN when undefined. For checkpoint choice, where rows are samples, not patients."""
    try:
        return _c_index_arrays(np.asarray(time, float), np.asarray(event, int), np.asarray(risk, float))
    except _Undefined:
        return float("nan")


def auroc(labels: np.ndarray, probs: np.ndarray) -> float:
    """AUROC of per-sample class probabilities [n, C] (binary: positive class; else OvR macro); NaN
    when undefined."""
    try:
        return _auroc_arrays(np.asarray(labels, int), np.asarray(probs, float))
    except _Undefined:
        return float("nan")


# ----------------------------------------------------------------------------- aggregation
def _check_metrics(task: TaskSpec, metrics: Sequence[str] | None) -> list[str]:
    metrics = list(metrics or task.metrics)
    allowed = SURVIVAL_METRICS if task.kind == "survival" else CLASSIFICATION_METRICS
    bad = [m for m in metrics if m not in allowed]
    if bad:
        raise ValueError(f"task {task.id} ({task.kind}): unknown metric(s) {bad}; allowed: {list(allowed)}")
    return metrics


def _stack_logits(preds: pd.DataFrame) -> np.ndarray:
    return np.stack([np.asarray(v, dtype=np.float64) for v in preds["logits"]])


def aggregate(
    task: TaskSpec,
    preds: pd.DataFrame,
    bin_edges: BinEdges,
    need_curves: bool,
    patients: Sequence[str] | None = None,
) -> Units:
    """Average rows per patient (classification: per patient and label).

    ``patients`` fixes the patient codes (their order), so that two methods aggregated with
    the same list can be resampled with the same codes (a paired bootstrap)."""
    if len(preds) == 0:
        raise ValueError(f"task {task.id}: no prediction rows to score")
    patient_ids = preds["patient_id"].astype(str).to_numpy()
    order = np.asarray(patients) if patients is not None else np.unique(patient_ids)
    code_of = {p: i for i, p in enumerate(order)}
    codes = np.array([code_of[p] for p in patient_ids])
    logits = _stack_logits(preds)
    if task.kind == "survival":
        return _aggregate_survival(task, preds, codes, len(order), logits, bin_edges, need_curves)
    probs = _softmax(logits)
    labels = preds["label"].to_numpy(dtype=np.int64)
    # Slide tasks: one unit per patient (and label). Tile tasks are scored per tile, as published;
    # their patient (group) only ties tiles together in the bootstrap.
    second = labels if task.is_slide_task else np.arange(len(labels))
    keys = pd.DataFrame({"p": codes, "y": second})
    grouped = keys.groupby(["p", "y"], sort=True).indices
    unit_p = np.array([k[0] for k in grouped])
    if task.is_slide_task and len(unit_p) != len(np.unique(unit_p)):
        log.warning(
            "task %s: %d patient(s) carry rows with different labels; each label is scored as its own unit",
            task.id,
            len(unit_p) - len(np.unique(unit_p)),
        )
    return Units(
        patient=unit_p,
        n_patients=len(order),
        label=np.array([labels[rows[0]] for rows in grouped.values()]),
        probs=np.stack([probs[rows].mean(axis=0) for rows in grouped.values()]),
    )


def _aggregate_survival(
    task: TaskSpec,
    preds: pd.DataFrame,
    codes: np.ndarray,
    n_patients: int,
    logits: np.ndarray,
    bin_edges: BinEdges,
    need_curves: bool,
) -> Units:
    rows_of = pd.Series(np.arange(len(codes))).groupby(codes, sort=True).indices
    unit_p = np.array(sorted(rows_of))
    hazards = 1.0 / (1.0 + np.exp(-logits))
    mean_h = np.stack([hazards[rows_of[p]].mean(axis=0) for p in unit_p])
    risk = -np.cumprod(1.0 - mean_h, axis=1).sum(axis=1)
    time = preds["time"].to_numpy(dtype=np.float64)
    event = preds["event"].to_numpy(dtype=np.int64)
    first = np.array([rows_of[p][0] for p in unit_p])
    curves = grid = None
    if need_curves and bin_edges is not None:
        grid = _time_grid(time[first], event[first])
        row_edges = _edges_per_row(preds, bin_edges)
        row_curves = np.stack([_curve(h, e, grid) for h, e in zip(hazards, row_edges, strict=True)])
        curves = np.stack([row_curves[rows_of[p]].mean(axis=0) for p in unit_p])
    return Units(
        patient=unit_p,
        n_patients=n_patients,
        time=time[first],
        event=event[first],
        risk=risk,
        curves=curves,
        grid=grid,
    )


def _edges_per_row(preds: pd.DataFrame, bin_edges: BinEdges) -> list[np.ndarray]:
    if isinstance(bin_edges, Mapping):
        by_fold = {int(k): np.asarray(v, dtype=np.float64) for k, v in bin_edges.items()}
        missing = sorted(set(preds["fold"].astype(int)) - set(by_fold))
        if missing:
            raise ValueError(f"bin_edges has no entry for fold(s) {missing}")
        return [by_fold[int(f)] for f in preds["fold"]]
    edges = np.asarray(bin_edges, dtype=np.float64)
    return [edges] * len(preds)


def _curve(hazards: np.ndarray, edges: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """S(t) on ``grid``: piecewise linear inside each bin, flat beyond the last edge."""
    surv = np.concatenate([[1.0], np.cumprod(1.0 - hazards)])
    return np.interp(grid, edges, surv)


def _time_grid(time: np.ndarray, event: np.ndarray) -> np.ndarray:
    """Evaluation times of the IBS: observed event times below the largest observed time."""
    return np.unique(time[(event == 1) & (time < time.max())])


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


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
        except _Undefined as err:
            if not quiet:
                log.warning("task %s: %s is undefined here (%s); recording NaN", task.id, m, err)
            out[m] = float("nan")
    return out


class _Undefined(ValueError):
    """The metric has no value on these samples."""


# Metric kernels: vectorised numpy so that 1,000 bootstrap resamples take seconds; each equals
# its scikit-learn / lifelines counterpart on the same inputs (tests/test_metrics.py).
def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their mean rank (as scipy.stats.rankdata, without its import cost)."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    bounds = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1], True])
    ranks = np.empty(len(values))
    ranks[order] = np.repeat((bounds[:-1] + bounds[1:] + 1) / 2, np.diff(bounds))
    return ranks


def _binary_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney AUROC with average ranks for ties (= sklearn.metrics.roc_auc_score)."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise _Undefined("only one class present")
    ranks = _average_ranks(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _auroc(u: Units, idx: np.ndarray) -> float:
    return _auroc_arrays(u.label[idx], u.probs[idx])


def _auroc_arrays(y: np.ndarray, p: np.ndarray) -> float:
    if p.shape[1] == 2:
        return _binary_auc(y == 1, p[:, 1])
    per_class = [_binary_auc(y == c, p[:, c]) for c in range(p.shape[1]) if 0 < (y == c).sum() < len(y)]
    if not per_class:
        raise _Undefined("fewer than two classes present")
    return float(np.mean(per_class))


def _confusion(u: Units, idx: np.ndarray) -> np.ndarray:
    """Confusion counts [true, predicted] over all classes."""
    if len(idx) == 0:
        raise _Undefined("no samples")
    n = u.probs.shape[1]
    pred = u.probs[idx].argmax(axis=1)
    return np.bincount(u.label[idx] * n + pred, minlength=n * n).reshape(n, n)


def _accuracy(u: Units, idx: np.ndarray) -> float:
    cm = _confusion(u, idx)
    return float(np.trace(cm) / cm.sum())


def _balanced_accuracy(u: Units, idx: np.ndarray) -> float:
    """Mean recall over the classes present in the labels (as scikit-learn)."""
    cm = _confusion(u, idx)
    support = cm.sum(axis=1)
    return float(np.mean(np.diag(cm)[support > 0] / support[support > 0]))


def _f1(u: Units, idx: np.ndarray, weighted: bool) -> float:
    """F1 per class over the classes in labels or predictions (scikit-learn's default set)."""
    cm = _confusion(u, idx)
    tp, support, predicted = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    present = (support + predicted) > 0
    f1 = 2 * tp[present] / (support[present] + predicted[present])
    return float(np.average(f1, weights=support[present]) if weighted else f1.mean())


def _binary_f1(u: Units, idx: np.ndarray) -> float:
    """F1 of the positive class (index 1) of a binary task."""
    if u.probs.shape[1] != 2:
        raise _Undefined("binary_f1 is for two-class tasks")
    cm = _confusion(u, idx)
    denominator = cm[1].sum() + cm[:, 1].sum()
    return float(2 * cm[1, 1] / denominator) if denominator else 0.0


def _c_index(u: Units, idx: np.ndarray) -> float:
    return _c_index_arrays(u.time[idx], u.event[idx], u.risk[idx])


def _c_index_arrays(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C with lifelines' conventions: ties in risk count 1/2; a censored time equal to
    an event time counts as surviving longer."""
    if event.sum() == 0 or len(time) < 2:
        raise _Undefined("no observed event or fewer than two patients")
    concordant = comparable = 0.0
    for start in range(0, len(time), 2048):  # row blocks bound the pairwise matrices' memory
        rows = slice(start, start + 2048)
        t_i, t_j = time[rows, None], time[None, :]
        pairs = (event[rows, None] == 1) & ((t_i < t_j) | ((t_i == t_j) & (event[None, :] == 0)))
        r_i, r_j = risk[rows, None], risk[None, :]
        concordant += ((r_i > r_j) & pairs).sum() + 0.5 * ((r_i == r_j) & pairs).sum()
        comparable += pairs.sum()
    if comparable == 0:
        raise _Undefined("no admissible pairs")
    return float(concordant / comparable)


def _ibs(u: Units, idx: np.ndarray) -> float:
    if u.curves is None:
        raise _Undefined("no bin_edges given")
    time, event, curves = u.time[idx], u.event[idx], u.curves[idx]
    keep = u.grid < time.max()
    grid, curves = u.grid[keep], curves[:, keep]
    if len(grid) < 2:
        raise _Undefined("fewer than two evaluation times")
    g_at = _km_censoring(time, event)
    g_grid = g_at(grid, left=False)
    g_own = g_at(time, left=True)
    died = (time[:, None] <= grid[None, :]) & (event[:, None] == 1)
    alive = time[:, None] > grid[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(died, curves**2 / g_own[:, None], 0.0) + np.where(
            alive, (1 - curves) ** 2 / g_grid[None, :], 0.0
        )
    brier = terms.mean(axis=0)
    return float(np.trapezoid(brier, grid) / (grid[-1] - grid[0]))


def _km_censoring(time: np.ndarray, event: np.ndarray) -> Callable[[np.ndarray, bool], np.ndarray]:
    """Kaplan-Meier curve G of the censoring times, as a function (t, left) → G(t) or G(t−)."""
    uniq, first = np.unique(np.sort(time), return_index=True)
    at_risk = len(time) - first
    censored = np.bincount(np.searchsorted(uniq, time[event == 0]), minlength=len(uniq))
    g = np.cumprod(1.0 - censored / at_risk)

    def at(t: np.ndarray, left: bool) -> np.ndarray:
        pos = np.searchsorted(uniq, t, side="left" if left else "right") - 1
        return np.where(pos >= 0, g[np.clip(pos, 0, None)], 1.0)

    return at


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


_METRIC_FNS: dict[str, Callable[[Units, np.ndarray], float]] = {
    "auroc": _auroc,
    "balanced_accuracy": _balanced_accuracy,
    "accuracy": _accuracy,
    "macro_f1": lambda u, i: _f1(u, i, weighted=False),
    "weighted_f1": lambda u, i: _f1(u, i, weighted=True),
    "binary_f1": _binary_f1,
    "c_index": _c_index,
    "ibs": _ibs,
}

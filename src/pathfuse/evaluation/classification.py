"""Classification metric kernels on units: vectorised numpy, each equal to scikit-learn's value."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pathfuse.evaluation.units import UndefinedMetric, Units, required


# Metric kernels: vectorised numpy so that 1,000 bootstrap resamples take seconds; each equals
# its scikit-learn / lifelines counterpart on the same inputs (tests/evaluation/test_metrics.py).
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
        raise UndefinedMetric("only one class present")
    ranks = _average_ranks(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _auroc(u: Units, idx: np.ndarray) -> float:
    return auroc_arrays(required(u.label, "label")[idx], required(u.probs, "probs")[idx])


def auroc_arrays(y: np.ndarray, p: np.ndarray) -> float:
    """AUROC of class probabilities ``p`` [n, C] against integer labels ``y`` [n].

    Binary tasks score the positive class; multi-class tasks take the one-vs-rest macro mean over
    the classes that are present and absent in ``y`` at least once (others have no AUROC).

    Raises:
        UndefinedMetric: when no class has both positives and negatives.
    """
    if p.shape[1] == 2:
        return _binary_auc(y == 1, p[:, 1])
    per_class = [_binary_auc(y == c, p[:, c]) for c in range(p.shape[1]) if 0 < (y == c).sum() < len(y)]
    if not per_class:
        raise UndefinedMetric("fewer than two classes present")
    return float(np.mean(per_class))


def _confusion(u: Units, idx: np.ndarray) -> np.ndarray:
    """Confusion counts [true, predicted] over all classes."""
    if len(idx) == 0:
        raise UndefinedMetric("no samples")
    probs = required(u.probs, "probs")
    n = probs.shape[1]
    pred = probs[idx].argmax(axis=1)
    return np.bincount(required(u.label, "label")[idx] * n + pred, minlength=n * n).reshape(n, n)


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
    if required(u.probs, "probs").shape[1] != 2:
        raise UndefinedMetric("binary_f1 is for two-class tasks")
    cm = _confusion(u, idx)
    denominator = cm[1].sum() + cm[:, 1].sum()
    return float(2 * cm[1, 1] / denominator) if denominator else 0.0


CLASSIFICATION_KERNELS: dict[str, Callable[[Units, np.ndarray], float]] = {
    "auroc": _auroc,
    "balanced_accuracy": _balanced_accuracy,
    "accuracy": _accuracy,
    "macro_f1": lambda u, i: _f1(u, i, weighted=False),
    "weighted_f1": lambda u, i: _f1(u, i, weighted=True),
    "binary_f1": _binary_f1,
}

"""Per-fold statistics: every cross-validated number of the tables is a mean over outer folds.

Why per fold: each outer fold has its own models (and, for survival, its own time bins), so
scores of different folds are not on one scale. Pooling the test predictions of all folds and
computing one AUROC or c-index compares a fold-1 score with a fold-2 score; a reference that
switches experts between folds is then penalised even when it is as good in every fold.

So a method's value is the mean over folds of its per-fold metric, and its gain over the
reference is the mean over folds of (metric of the method on fold f − metric of the reference
on fold f). Both get their uncertainty from one **stratified, paired, per-fold bootstrap**:

* A resample draws, in every fold independently, the fold's test patients with replacement
  *within strata* — classification: the patient's class (a patient whose units carry different
  classes is its own stratum "mixed"); survival: event observed or censored — keeping each
  stratum's size. All rows of a drawn patient enter together.
* The same draw is used for every method (paired): the methods are scored on identical
  patients, so their correlation cancels out of the difference.
* The statistic (mean over folds) is recomputed on each resample. A resample where it is
  undefined in some fold (e.g. no admissible c-index pair) is left out and counted
  (``n_undefined``). Folds whose *observed* value is undefined (one class in the test set)
  are left out of the mean and named by the caller.
* CI: percentiles of the resampled statistic. p-value (two-sided): 2 × the smaller share of
  resampled differences on either side of 0 (≤ 0 or ≥ 0), capped at 1 — the smallest level
  at which the percentile CI excludes 0.

:func:`holm` corrects a family of p-values (one per task) for the summary's win counts.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pathfuse import progress
from pathfuse.config import TaskSpec
from pathfuse.evaluation.metrics import compute, percentiles
from pathfuse.evaluation.units import BinEdges, Units, aggregate

log = logging.getLogger(__name__)

#: Stratum of a patient whose units carry different classes.
MIXED = -1


@dataclass
class FoldSample:
    """One fold's test patients shared by every scored source, their strata and units.

    Attributes:
        patients: the shared patient ids (sorted); their position is the patient code.
        strata: [n_patients] stratum of each patient (class, event status, or MIXED).
        units: source → its predictions aggregated on exactly these patients.
        n_rows: source → its prediction rows on these patients.
    """

    fold: int
    patients: list[str]
    strata: np.ndarray
    units: dict[str, Units] = field(default_factory=dict)
    n_rows: dict[str, int] = field(default_factory=dict)


def fold_sample(task: TaskSpec, fold: int, rows: Mapping[str, pd.DataFrame],
                edges: Mapping[str, BinEdges], need_curves: bool) -> FoldSample:
    """Aggregate every source's test rows of one fold on the patients all of them have.

    A source with patients the others lack keeps only the shared ones (logged): every method
    is scored on the same patients, or the per-fold differences would compare different sets.
    """
    per_source = {name: set(df["patient_id"].astype(str)) for name, df in rows.items()}
    shared = sorted(set.intersection(*per_source.values()))
    if not shared:
        raise ValueError(f"task {task.id} fold {fold}: the prediction files share no test patient")
    sample = FoldSample(fold, shared, np.empty(0, dtype=np.int64))
    for name, df in rows.items():
        extra = len(per_source[name]) - len(shared)
        if extra:
            log.warning("task %s fold %d: %s has %d test patient(s) that other files lack; scored "
                        "on the %d shared ones", task.id, fold, name, extra, len(shared))
        keep = df[df["patient_id"].astype(str).isin(shared)]
        sample.units[name] = aggregate(task, keep, edges.get(name), need_curves, patients=shared)
        sample.n_rows[name] = len(keep)
    sample.strata = patient_strata(task, next(iter(sample.units.values())))
    return sample


def patient_strata(task: TaskSpec, units: Units) -> np.ndarray:
    """Stratum per patient code: its class (MIXED if its units differ), or its event status."""
    values = getattr(units, task.kind_strategy.stratify_by)
    per = pd.DataFrame({"p": units.patient, "v": values}).groupby("p")["v"].agg(["nunique", "first"])
    strata = np.full(units.n_patients, MIXED, dtype=np.int64)
    single = per["nunique"] == 1
    strata[per.index[single].to_numpy()] = per.loc[single, "first"].to_numpy()
    return strata


def draw_patients(strata: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """[n_resamples, n_patients] patient codes drawn with replacement within each stratum."""
    columns = []
    for stratum in np.unique(strata):
        members = np.flatnonzero(strata == stratum)
        columns.append(members[rng.integers(0, len(members), size=(n_resamples, len(members)))])
    return np.concatenate(columns, axis=1) if columns else np.zeros((n_resamples, 0), dtype=np.int64)


def score_fold(task: TaskSpec, sample: FoldSample, source: str, metrics: Sequence[str],
               draws: np.ndarray) -> dict[str, tuple[float, np.ndarray]]:
    """Score one source on one fold, observed and on each bootstrap resample.

    Returns:
        metric → (observed value on the fold's test set, its value on each resample [B]).
    """
    units = sample.units[source]
    observed = compute(units, np.arange(len(units.patient)), metrics, task, quiet=True)
    out = {m: (observed[m], np.empty(len(draws))) for m in metrics}
    tick = progress.current().tick  # the job's log: resample b of B when a line is due
    for b, picked in enumerate(draws):
        for m, v in compute(units, units.units_of(picked), metrics, task, quiet=True).items():
            out[m][1][b] = v
        tick(b + 1, len(draws), "resample")
    return out


@dataclass(frozen=True)
class MeanStat:
    """A mean over folds with its bootstrap CI (and p-value for differences)."""

    value: float
    ci_low: float
    ci_high: float
    p_value: float
    n_undefined: int
    folds_used: list[int]
    folds_undefined: list[int]
    draws: np.ndarray


def mean_over_folds(observed: Mapping[int, float], draws: Mapping[int, np.ndarray], level: float,
                    name: str, with_p: bool = False) -> MeanStat:
    """Mean over the folds with a defined observed value, and its percentile bootstrap CI.

    Args:
        observed: fold → the statistic on the fold's test set (a metric, or a difference).
        draws: fold → its values on the B resamples (same resample index across folds).
        level: confidence level of the percentile interval (e.g. 0.95).
        name: what the statistic is, for the warning about undefined resamples.
        with_p: also the two-sided p-value of "the mean is 0" (for differences).
    """
    used = [f for f in sorted(observed) if not math.isnan(observed[f])]
    undefined = [f for f in sorted(observed) if math.isnan(observed[f])]
    if not used:
        n = len(next(iter(draws.values()))) if draws else 0
        return MeanStat(math.nan, math.nan, math.nan, math.nan, n, used, undefined, np.full(n, np.nan))
    values = np.mean(np.stack([draws[f] for f in used], axis=1), axis=1)
    valid = values[~np.isnan(values)]
    low, high = percentiles(values, level, name)
    p_value = math.nan
    if with_p and valid.size:
        p_value = float(min(1.0, 2 * min((valid <= 0).mean(), (valid >= 0).mean())))
    return MeanStat(float(np.mean([observed[f] for f in used])), low, high, p_value,
                    int(len(values) - valid.size), used, undefined, values)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (NaN entries stay NaN and do not count in the family)."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(len(p), np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    m = len(order)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out

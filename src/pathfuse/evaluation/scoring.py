"""Scoring every source of a task per fold on shared resamples, and each source's test rows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from pathfuse import progress
from pathfuse.config import Config, TaskSpec
from pathfuse.evaluation import foldstats
from pathfuse.evaluation.metrics import bootstrap_ci, score
from pathfuse.evaluation.sources import Loaded
from pathfuse.evaluation.table import metric_row, undefined_note
from pathfuse.reproducibility import derive_seed

#: Per source, fold and metric: (observed value, values on the bootstrap resamples).
Scores = dict[str, dict[int, dict[str, tuple[float, np.ndarray]]]]


def score_folds(cfg: Config, task: TaskSpec, loaded: list[Loaded], folds: list[int], metrics: list[str],
                n_resamples: int | None = None) -> tuple[dict[int, foldstats.FoldSample], Scores]:
    """Every source's per-fold metrics and their values on the shared stratified resamples.

    ``n_resamples`` defaults to ``report.n_bootstrap``; 0 gives the observed values only (what a
    seed replicate needs: its spread is reported beside the CI, not bootstrapped).
    """
    if n_resamples is None:
        n_resamples = cfg.settings.report.n_bootstrap
    samples: dict[int, foldstats.FoldSample] = {}
    scores: Scores = {x.source.method: {} for x in loaded}
    report = progress.current()  # a step per (fold, source): the job's bootstrap progress
    for k, fold in enumerate(folds):
        present = {x.source.method: x for x in loaded if not x.test(fold).empty}
        report.skip(len(loaded) - len(present))
        if not present:
            continue
        sample = foldstats.fold_sample(task, fold, {n: x.test(fold) for n, x in present.items()},
                                       {n: x.bin_edges for n, x in present.items()}, need_curves="ibs" in metrics)
        draws = foldstats.draw_patients(sample.strata, n_resamples,
                                        np.random.default_rng(derive_seed(cfg.seed, task.id, "bootstrap", fold)))
        samples[fold] = sample
        for i, name in enumerate(present):
            report.note(fold=f"{k + 1}/{len(folds)}", method=f"{name} ({i + 1}/{len(present)})")
            scores[name][fold] = foldstats.score_fold(task, sample, name, metrics, draws)
            report.advance()
    return samples, scores


def source_rows(cfg: Config, task: TaskSpec, item: Loaded, folds: list[int], metrics: list[str],
                samples: Mapping[int, foldstats.FoldSample], scores: Scores) -> list[dict[str, Any]]:
    """Per-fold, mean-over-folds and pooled metric rows of one source.

    Pooled rows come only with several folds and outputs that are not tied to per-fold time bins.
    """
    level = float(cfg.settings.report.ci_level)
    src, own = item.source, scores[item.source.method]
    rows: list[dict[str, Any]] = []
    absent = [f for f in folds if f not in own]
    for metric in metrics:
        for fold in folds:
            if fold in absent:
                rows.append(metric_row(task, src, fold, "test", metric, status="missing",
                                       note=f"no test predictions for fold {fold} in {src.path}"))
                continue
            value = own[fold][metric][0]
            undefined = np.isnan(value)
            rows.append(metric_row(task, src, fold, "test", metric, value,
                                   n_samples=samples[fold].n_rows[src.method],
                                   n_patients=len(samples[fold].patients),
                                   status="undefined" if undefined else "ok",
                                   note=undefined_note(task, metric, [fold]) if undefined else ""))
        if absent:
            rows.append(metric_row(
                task, src, -1, "test", metric, statistic="mean", status="missing",
                note=f"fold(s) {absent} missing: a mean over the other folds would not be comparable"))
            continue
        stat = foldstats.mean_over_folds({f: own[f][metric][0] for f in folds},
                                         {f: own[f][metric][1] for f in folds}, level, metric)
        status = "ok" if stat.folds_used else "undefined"
        note = undefined_note(task, metric, stat.folds_undefined) if stat.folds_undefined else ""
        rows.append(metric_row(task, src, -1, "test", metric, stat.value, statistic="mean",
                               ci=(stat.ci_low, stat.ci_high),
                               n_samples=sum(samples[f].n_rows[src.method] for f in folds),
                               n_patients=sum(len(samples[f].patients) for f in folds), n_undefined=stat.n_undefined,
                               status=status, note=note))
    # Pooling needs one output scale across folds: not so for kinds whose outputs are per-fold time bins.
    if not task.kind_strategy.time_to_event and len(folds) > 1 and not absent:
        pooled = item.test()
        values = score(task, pooled, metrics)
        cis = bootstrap_ci(task, pooled, metrics, n_resamples=cfg.settings.report.n_bootstrap,
                           seed=derive_seed(cfg.seed, task.id, src.method, "pooled"), level=level)
        rows += [metric_row(task, src, -1, "test", m, values[m], statistic="pooled", ci=cis[m], n_samples=len(pooled),
                            n_patients=pooled["patient_id"].nunique(),
                            note="pooled over folds: scores of different fold models on one scale") for m in metrics]
    return rows


"""Stage entry `evaluate`: score every prediction file of one task → ``results/metrics/{task}.parquet``.

Experts, fusers and baselines are scored identically by :mod:`pathfuse.evaluation.metrics`, per outer fold
and on the test patients every file has (:mod:`pathfuse.evaluation.foldstats`). The output is the long
``metrics`` table of docs/architecture.md; ``statistic`` says what a row is:

* ``fold`` (``fold >= 0``): a metric on one fold's test set. ``status`` "undefined" (value NaN,
  ``note`` says why) when the metric has no value there, e.g. one class in the test set.
* ``mean`` (``fold == -1``): the mean over folds of the per-fold values — what is ranked — with
  its CI from the stratified per-fold bootstrap; folds where the metric is undefined are left
  out and named in ``note``; ``n_undefined`` counts the resamples left out.
* ``pooled`` (``fold == -1``): classification tasks with several folds only: the metric of all
  folds' test predictions pooled, with a patient-level bootstrap CI. It puts scores of
  different fold models on one scale, so it is labelled and never used for gains. Survival
  tasks have none (each fold has its own time bins).
* ``split == "val"``: each expert's selection metric and NLL per fold on validation — the
  inputs of :mod:`pathfuse.selection`, which picks the reference expert of each fold (the same
  rule as the ``best_val_expert`` baseline).
* ``metric == "delta_<primary>"``: the method minus that reference on each fold
  (``statistic`` fold) and the mean of those differences (``statistic`` mean) with the paired
  bootstrap CI and two-sided p-value (uncorrected; the report applies Holm across tasks).
* ``statistic == "seed"`` (only with ``experts.n_seeds`` > 1, which also adds the ``seed``
  column, 0 on every other row): the gain of each training seed (:mod:`pathfuse.seeds`).

A prediction file that does not exist, or lacks a fold's test rows, becomes rows with ``value``
NaN and ``status`` "missing" — never a silently dropped method.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from pathfuse import progress
from pathfuse.config import Config
from pathfuse.evaluation.reference import choose_reference, delta_rows, describe_reference
from pathfuse.evaluation.scoring import score_folds, source_rows
from pathfuse.evaluation.sources import Loaded, expected_folds, expected_sources, load_source
from pathfuse.evaluation.table import metrics_frame, missing_rows
from pathfuse.fusion import FUSERS
from pathfuse.io import write_parquet
from pathfuse.seeds import n_seeds, replicates, seed_gain_rows
from pathfuse.selection import primary_metric

log = logging.getLogger(__name__)


def evaluate_task(cfg: Config, task: str) -> Path:
    """Score every expert and fusion prediction file of ``task`` → its metrics Parquet.

    Returns:
        The path of ``results/metrics/{task}.parquet``.
    """
    spec = cfg.task(task)
    metric = primary_metric(cfg, spec)
    metrics = spec.kind_strategy.scored_metrics(spec)
    loaded, missing = [], []
    for source in expected_sources(cfg, spec):
        item = load_source(source, spec)
        if item is None:
            if _not_applicable(source.method, spec.is_slide_task) is None:
                log.warning("task %s: %s has no prediction file %s; its cells are reported missing",
                            task, source.method, source.path)
            missing.append(source)
        else:
            loaded.append(item)
    folds = expected_folds(spec, loaded)
    rows: list[dict[str, Any]] = []
    # Steps: each method on each fold (the per-fold bootstrap), then each method's pooled rows.
    with progress.scope("job", len(loaded) * (len(folds) + 1), interval=cfg.settings.logging.progress_interval_s,
                        task=task) as report:
        samples, scores = score_folds(cfg, spec, loaded, folds, metrics)
        for i, item in enumerate(loaded):
            report.note(fold="pooled", method=f"{item.source.method} ({i + 1}/{len(loaded)})")
            rows += source_rows(cfg, spec, item, folds, metrics, samples, scores)
            report.advance()
    for source in missing:
        why = _not_applicable(source.method, spec.is_slide_task)
        reason = f"not applicable: {why}" if why else f"no prediction file {source.path}"
        rows += [r for m in metrics for r in missing_rows(spec, source, folds, m, reason)]
    experts = [x for x in loaded if x.source.family == "expert"]
    chosen, val_rows, rankings = choose_reference(cfg, spec, experts, folds, metric)
    rows += val_rows + delta_rows(cfg, spec, loaded, missing, chosen, metric, scores, samples)
    df = metrics_frame(rows)
    seeds_meta: dict[str, Any] = {}
    if replicates(cfg):  # experts.n_seeds > 1: every seed's gain, a ``seed`` column (0: the rows above)
        by_seed, references = seed_gain_rows(cfg, spec, metric, folds, df)
        df = pd.concat([df.assign(seed=0), by_seed], ignore_index=True).astype({"seed": "int64"})
        seeds_meta = {"n_seeds": n_seeds(cfg), "seed_references": references}
    meta = {
        "task": task, "kind": spec.kind, "primary_metric": metric, "folds": folds,
        "best_expert": {str(f): n for f, n in chosen.items()},
        "reference": describe_reference(chosen), "selection": rankings,
        "fold_facts": _fold_facts(experts),
        # What one resampled unit is (patient, slide, group or tile), with the tables' note if not patients.
        "patients": (experts[0].meta.get("patients") or {}) if experts else {},
        "n_test_patients": {str(f): len(s.patients) for f, s in samples.items()},
        "n_bootstrap": cfg.settings.report.n_bootstrap,
        "ci_level": float(cfg.settings.report.ci_level), "seed": cfg.seed,
        "missing": {s.method: str(s.path) for s in missing}, **seeds_meta,
    }
    log.info("task %s: %d metric rows, %d missing cells, best expert %s", task, len(df),
             int((df["status"] == "missing").sum()), meta["reference"])
    return write_parquet(df, cfg.layout.metrics(task), schema="metrics", meta=meta)


def _fold_facts(experts: list[Loaded]) -> dict[str, dict[str, Any]]:
    """Per fold: was validation carved from train, and from which split source (the experts' metadata)."""
    facts = (experts[0].meta.get("folds") or {}) if experts else {}
    return {str(f): {"carve_val": bool(info.get("carve_val", False)), "split_source": info.get("split_source", "")}
            for f, info in facts.items()}


def _not_applicable(method: str, is_slide_task: bool) -> str | None:
    """Why a fusion method does not run on this task (None: it does, or the source is an expert)."""
    return FUSERS.get(method).not_applicable(is_slide_task) if method in FUSERS else None

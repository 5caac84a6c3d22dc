"""Stage entry ``evaluate-external``: every source scored on a labelled external cohort, apart from the CV.

Rows use the ``metrics`` table's columns with ``split`` "external" (never "test", so nothing
here can be mixed into the cross-validation numbers):

* ``statistic`` "ensemble" (``fold`` −1): the fold ensemble's metric (:mod:`pathfuse.external.run`
  says how it is formed), with a 95% patient-level bootstrap CI — patients drawn with replacement
  within their class (survival: event status), the same draws for every source (paired).
* ``statistic`` "fold" (``fold`` k): fold k's model alone on the whole cohort, observed value only.
* ``metric`` "delta_<primary>": each source's ensemble minus the reference's on the same
  resamples, with the CI and the two-sided p-value. The reference is ``best_val_expert`` applied
  to the cohort: in every fold the expert chosen on that fold's validation rows, then the fold
  ensemble — the external counterpart of the CV tables' reference, chosen without the cohort.
* A source the predict job could not make is rows with ``status`` "missing" and its reason.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pathfuse import progress
from pathfuse.config import Config
from pathfuse.evaluation import foldstats
from pathfuse.evaluation.sources import Source
from pathfuse.evaluation.table import DELTA_PREFIX, metric_row, metrics_frame
from pathfuse.external.run import ENSEMBLE
from pathfuse.io import read_parquet, write_parquet
from pathfuse.reproducibility import derive_seed
from pathfuse.selection import primary_metric

log = logging.getLogger(__name__)

REFERENCE = "best_val_expert"


def evaluate_external(cfg: Config, task: str, cohort: str) -> Path:
    """Score every source of the predict job's manifest on ``cohort`` → ``metrics/external/{task}/{cohort}.parquet``."""
    spec = cfg.task(task)
    metrics = spec.kind_strategy.scored_metrics(spec)
    primary = primary_metric(cfg, spec)
    manifest_path = cfg.layout.external_manifest(task, cohort)
    manifest, info = read_parquet(manifest_path, schema="external_manifest")
    if not info.get("labelled"):
        raise ValueError(f"task {task}, cohort {cohort}: no label table (task_data.{task}.external), nothing to score")
    rows: list[dict[str, Any]] = []
    loaded: dict[str, tuple[Source, pd.DataFrame, Any]] = {}
    for entry in manifest.to_dict(orient="records"):
        name, family = str(entry["source"]), str(entry["family"])
        source = Source(name, family, name if family == "expert" else None, manifest_path.parent / str(entry["path"]))
        if entry["status"] != "ok":
            rows += [metric_row(spec, source, ENSEMBLE, "external", m, statistic="ensemble", status="missing",
                                note=str(entry["note"])) for m in metrics]
            continue
        df, meta = read_parquet(source.path, schema="predictions")
        loaded[name] = (source, df, meta.get("bin_edges"))
    if not loaded:
        raise ValueError(f"task {task}, cohort {cohort}: no source predicted the cohort ({manifest_path})")
    level = float(cfg.settings.report.ci_level)
    with progress.scope("job", len(loaded), interval=cfg.settings.logging.progress_interval_s, task=task,
                        cohort=cohort) as report:
        ensemble = {n: df[df["fold"] == ENSEMBLE] for n, (_, df, _) in loaded.items()}
        sample = foldstats.fold_sample(spec, ENSEMBLE, ensemble, {n: e for n, (_, _, e) in loaded.items()},
                                       need_curves="ibs" in metrics)
        draws = foldstats.draw_patients(sample.strata, cfg.settings.report.n_bootstrap,
                                        np.random.default_rng(derive_seed(cfg.seed, task, "external", cohort)))
        scores = {}
        for name, (source, df, edges) in loaded.items():
            report.note(source=name)
            scores[name] = foldstats.score_fold(spec, sample, name, metrics, draws)
            rows += _source_rows(cfg, spec, source, df, edges, metrics, scores[name], sample, level)
            report.advance()
    reference = REFERENCE if REFERENCE in scores else None
    for name, (source, _, _) in loaded.items():
        if reference is None:
            rows.append(metric_row(spec, source, ENSEMBLE, "external", DELTA_PREFIX + primary, statistic="ensemble",
                                   status="missing", note=f"no {REFERENCE} prediction on the cohort to compare with"))
            continue
        observed = scores[name][primary][0] - scores[reference][primary][0]
        stat = foldstats.mean_over_folds({ENSEMBLE: observed}, {ENSEMBLE: scores[name][primary][1]
                                                                - scores[reference][primary][1]},
                                         level, DELTA_PREFIX + primary, with_p=True)
        rows.append(metric_row(spec, source, ENSEMBLE, "external", DELTA_PREFIX + primary, stat.value,
                               statistic="ensemble", ci=(stat.ci_low, stat.ci_high), n_patients=len(sample.patients),
                               n_undefined=stat.n_undefined, reference=reference, p_value=stat.p_value))
    df = metrics_frame(rows).assign(cohort=cohort)
    meta = {"task": task, "cohort": cohort, "kind": spec.kind, "primary_metric": primary, "reference": reference,
            "split": "external", "ensemble": info.get("ensemble"), "missing_experts": info.get("missing_experts", {}),
            "n_patients": len(sample.patients), "n_bootstrap": cfg.settings.report.n_bootstrap,
            "ci_level": level, "patients": info.get("patients"), "dropped": info.get("dropped", {})}
    log.info("task %s, cohort %s: %d external metric rows on %d patients", task, cohort, len(df), len(sample.patients))
    return write_parquet(df, cfg.layout.external_metrics(task, cohort), schema="metrics", meta=meta)


def _source_rows(cfg: Config, spec: Any, source: Source, df: pd.DataFrame, edges: Any, metrics: list[str],
                 scored: dict[str, tuple[float, np.ndarray]], sample: foldstats.FoldSample,
                 level: float) -> list[dict[str, Any]]:
    """The ensemble's rows (with CI) and each fold model's observed value of one source."""
    rows = []
    for m in metrics:
        stat = foldstats.mean_over_folds({ENSEMBLE: scored[m][0]}, {ENSEMBLE: scored[m][1]}, level, m)
        rows.append(metric_row(spec, source, ENSEMBLE, "external", m, stat.value, statistic="ensemble",
                               ci=(stat.ci_low, stat.ci_high), n_samples=sample.n_rows[source.method],
                               n_patients=len(sample.patients), n_undefined=stat.n_undefined))
    for fold in sorted(int(f) for f in df["fold"].unique() if f != ENSEMBLE):
        part = foldstats.fold_sample(spec, fold, {source.method: df[df["fold"] == fold]}, {source.method: edges},
                                     need_curves="ibs" in metrics)
        values = foldstats.score_fold(spec, part, source.method, metrics, np.zeros((0, 0), dtype=np.int64))
        rows += [metric_row(spec, source, fold, "external", m, values[m][0], n_samples=part.n_rows[source.method],
                            n_patients=len(part.patients)) for m in metrics]
    return rows

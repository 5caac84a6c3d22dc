"""Stage entry `evaluate`: score every prediction file of one task → ``results/metrics/{task}.parquet``.

Experts, fusers and baselines are scored identically by :mod:`pathfuse.metrics`, per outer fold
and on the test patients every file has (:mod:`pathfuse.foldstats`). The output is the long
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
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from pathfuse import foldstats
from pathfuse.config import Config, TaskSpec
from pathfuse.io import read_parquet, write_parquet
from pathfuse.metrics import bootstrap_ci, score
from pathfuse.seeds import n_seeds, replicates, seed_gain_rows
from pathfuse.selection import primary_metric, rank_experts

log = logging.getLogger(__name__)

__all__ = ["DELTA_PREFIX", "METRICS_COLUMNS", "evaluate_task", "fusion_methods", "primary_metric"]

DELTA_PREFIX = "delta_"
#: Prediction columns scoring needs (embeddings and gate weights are left on disk).
_SCORE_COLUMNS = ["fold", "split", "oof", "sample_id", "patient_id", "label", "time", "event", "logits"]
METRICS_COLUMNS = [
    "task", "kind", "method", "family", "encoder", "fold", "statistic", "split", "metric", "value", "ci_low",
    "ci_high", "n_samples", "n_patients", "n_undefined", "status", "note", "reference", "p_value",
]
#: Per source, fold and metric: (observed value, values on the bootstrap resamples).
Scores = dict[str, dict[int, dict[str, tuple[float, np.ndarray]]]]


@dataclass(frozen=True)
class Source:
    """One prediction file a task expects: an expert (per encoder) or a fusion method."""

    method: str
    family: str | None  # None: a fusion method whose file is missing (family unknown)
    encoder: str | None
    path: Path


@dataclass
class Loaded:
    """A source's test/val rows (out-of-fold rows dropped) and its file metadata."""

    source: Source
    rows: pd.DataFrame
    meta: dict[str, Any]

    def test(self, fold: int | None = None) -> pd.DataFrame:
        keep = self.rows["split"] == "test"
        if fold is not None:
            keep &= self.rows["fold"] == fold
        return self.rows[keep]

    def val(self, fold: int) -> pd.DataFrame:
        return self.rows[(self.rows["split"] == "val") & (self.rows["fold"] == fold)]

    @property
    def bin_edges(self) -> Mapping[str, Sequence[float]] | None:
        return self.meta.get("bin_edges")

    def fold_edges(self, fold: int) -> Sequence[float] | None:
        return (self.bin_edges or {}).get(str(fold))


# ----------------------------------------------------------------------------- helpers
def fusion_methods(cfg: Config) -> list[str]:
    """Fusion methods of the run (``fusion.methods``; none when the key is absent)."""
    return list(cfg.section("fusion").get("methods", []))


def scored_metrics(task: TaskSpec) -> list[str]:
    """The task's metrics, plus ``binary_f1`` (the published code's F1) beside macro F1 on binary tasks."""
    metrics = list(task.metrics)
    if task.kind != "survival" and len(task.classes) == 2 and "binary_f1" not in metrics:
        metrics.append("binary_f1")
    return metrics


def derive_seed(base: int, *parts: object) -> int:
    """A seed from the run seed and a unit of work, independent of job order."""
    return (base * 1_000_003 + zlib.crc32("|".join(map(str, parts)).encode())) % 2**32


def expected_sources(cfg: Config, task: TaskSpec, seed: int = 0) -> list[Source]:
    """Every prediction file the task should have (of one training seed): experts first, then fusers."""
    experts = [Source(enc, "expert", enc, cfg.layout.expert_predictions(task.id, enc, seed))
               for enc in task.encoders]
    fusers = [Source(m, None, None, cfg.layout.fusion_predictions(task.id, m, seed))
              for m in fusion_methods(cfg)]
    return experts + fusers


def load_source(source: Source, task: TaskSpec) -> Loaded | None:
    """Read a prediction file (None when it does not exist); other schemas fail clearly."""
    if not source.path.exists():
        return None
    df, meta = read_parquet(source.path, schema="predictions", columns=_SCORE_COLUMNS)
    if meta.get("task") not in (None, task.id):
        raise ValueError(f"{source.path}: predictions of task {meta.get('task')!r}, expected {task.id!r}; "
                         "delete the file and re-run the stage that writes it")
    df = df[~df["oof"].astype(bool)]
    family = meta.get("family") or source.family or "fuser"
    return Loaded(Source(source.method, family, source.encoder, source.path), df.reset_index(drop=True), meta)


def _row(task: TaskSpec, source: Source, fold: int, split: str, metric: str, value: float = np.nan, *,
         statistic: str = "fold", ci: tuple[float, float] = (np.nan, np.nan), n_samples: int = 0,
         n_patients: int = 0, n_undefined: int = 0, status: str = "ok", note: str = "",
         reference: str | None = None, p_value: float = np.nan) -> dict[str, Any]:
    return {
        "task": task.id, "kind": task.kind, "method": source.method, "family": source.family,
        "encoder": source.encoder, "fold": fold, "statistic": statistic, "split": split, "metric": metric,
        "value": value, "ci_low": ci[0], "ci_high": ci[1], "n_samples": n_samples, "n_patients": n_patients,
        "n_undefined": n_undefined, "status": status, "note": note, "reference": reference, "p_value": p_value,
    }


def _missing(task: TaskSpec, source: Source, folds: list[int], metric: str, note: str,
             reference: str | None = None) -> list[dict[str, Any]]:
    """Missing cells of one metric: every fold and the mean."""
    return [_row(task, source, f, "test", metric, statistic="fold" if f >= 0 else "mean", status="missing",
                 note=note, reference=reference) for f in [*folds, -1]]


# ----------------------------------------------------------------------------- scoring
def score_folds(cfg: Config, task: TaskSpec, loaded: list[Loaded], folds: list[int], metrics: list[str],
                n_resamples: int | None = None) -> tuple[dict[int, foldstats.FoldSample], Scores]:
    """Every source's per-fold metrics and their values on the shared stratified resamples.

    ``n_resamples`` defaults to ``report.n_bootstrap``; 0 gives the observed values only (what a
    seed replicate needs: its spread is reported beside the CI, not bootstrapped).
    """
    if n_resamples is None:
        n_resamples = int(cfg.section("report")["n_bootstrap"])
    samples: dict[int, foldstats.FoldSample] = {}
    scores: Scores = {x.source.method: {} for x in loaded}
    for fold in folds:
        present = {x.source.method: x for x in loaded if not x.test(fold).empty}
        if not present:
            continue
        sample = foldstats.fold_sample(task, fold, {n: x.test(fold) for n, x in present.items()},
                                       {n: x.bin_edges for n, x in present.items()}, need_curves="ibs" in metrics)
        draws = foldstats.draw_patients(sample.strata, n_resamples,
                                        np.random.default_rng(derive_seed(cfg.seed, task.id, "bootstrap", fold)))
        samples[fold] = sample
        for name in present:
            scores[name][fold] = foldstats.score_fold(task, sample, name, metrics, draws)
    return samples, scores


def _undefined_note(task: TaskSpec, metric: str, folds: list[int]) -> str:
    why = "no event or no admissible pair" if task.kind == "survival" else "fewer than two classes"
    return f"{metric} undefined on the test set of fold(s) {folds} ({why}); left out of the mean"


def _test_rows(cfg: Config, task: TaskSpec, item: Loaded, folds: list[int], metrics: list[str],
               samples: Mapping[int, foldstats.FoldSample], scores: Scores) -> list[dict[str, Any]]:
    """Per-fold, mean-over-folds and (classification, several folds) pooled rows of one source."""
    level = float(cfg.section("report")["ci_level"])
    src, own = item.source, scores[item.source.method]
    rows: list[dict[str, Any]] = []
    absent = [f for f in folds if f not in own]
    for metric in metrics:
        for fold in folds:
            if fold in absent:
                rows.append(_row(task, src, fold, "test", metric, status="missing",
                                 note=f"no test predictions for fold {fold} in {src.path}"))
                continue
            value = own[fold][metric][0]
            n = {"n_samples": samples[fold].n_rows[src.method], "n_patients": len(samples[fold].patients)}
            undefined = np.isnan(value)
            rows.append(_row(task, src, fold, "test", metric, value, **n, status="undefined" if undefined else "ok",
                             note=_undefined_note(task, metric, [fold]) if undefined else ""))
        if absent:
            rows.append(_row(task, src, -1, "test", metric, statistic="mean", status="missing",
                             note=f"fold(s) {absent} missing: a mean over the other folds would not be comparable"))
            continue
        stat = foldstats.mean_over_folds({f: own[f][metric][0] for f in folds},
                                         {f: own[f][metric][1] for f in folds}, level, metric)
        status = "ok" if stat.folds_used else "undefined"
        note = _undefined_note(task, metric, stat.folds_undefined) if stat.folds_undefined else ""
        rows.append(_row(task, src, -1, "test", metric, stat.value, statistic="mean", ci=(stat.ci_low, stat.ci_high),
                         n_samples=sum(samples[f].n_rows[src.method] for f in folds),
                         n_patients=sum(len(samples[f].patients) for f in folds), n_undefined=stat.n_undefined,
                         status=status, note=note))
    if task.kind != "survival" and len(folds) > 1 and not absent:
        pooled = item.test()
        values = score(task, pooled, metrics)
        cis = bootstrap_ci(task, pooled, metrics, n_resamples=int(cfg.section("report")["n_bootstrap"]),
                           seed=derive_seed(cfg.seed, task.id, src.method, "pooled"), level=level)
        rows += [_row(task, src, -1, "test", m, values[m], statistic="pooled", ci=cis[m], n_samples=len(pooled),
                      n_patients=pooled["patient_id"].nunique(),
                      note="pooled over folds: scores of different fold models on one scale") for m in metrics]
    return rows


# ----------------------------------------------------------------------------- reference
def choose_reference(cfg: Config, task: TaskSpec, experts: list[Loaded], folds: list[int],
                     metric: str) -> tuple[dict[int, str | None], list[dict[str, Any]], dict[str, Any]]:
    """Per fold, the expert :func:`pathfuse.selection.rank_experts` ranks first on validation.

    Only experts with validation and test rows in the fold are eligible. Returns the choice
    (None where no expert is eligible), the ``val`` rows and the rankings (for the metadata).
    """
    alpha = float(cfg.section("fusion").get("survival_alpha", 0.4))
    chosen: dict[int, str | None] = {}
    rows: list[dict[str, Any]] = []
    rankings: dict[str, Any] = {}
    for fold in folds:
        eligible = [x for x in experts if not x.val(fold).empty and not x.test(fold).empty]
        edges = eligible[0].fold_edges(fold) if eligible else None
        ranked = rank_experts(task, {x.source.method: x.val(fold) for x in eligible}, task.encoders, metric,
                              edges, alpha)
        chosen[fold] = ranked[0].encoder if ranked else None
        rankings[str(fold)] = [r.as_dict() for r in ranked]
        by_name = {r.encoder: r for r in ranked}
        for x in experts:
            r = by_name.get(x.source.method)
            if r is None:
                rows.append(_row(task, x.source, fold, "val", metric, status="missing",
                                 note=f"no validation or test predictions for fold {fold}: not eligible"))
                continue
            rows += [_row(task, x.source, fold, "val", metric, r.value, n_samples=r.n_samples),
                     _row(task, x.source, fold, "val", "nll", r.nll, n_samples=r.n_samples)]
    return chosen, rows, rankings


def describe_reference(chosen: Mapping[int, str | None]) -> str:
    """``"uni_v2"`` if one expert won every fold, else ``"f0:uni_v2,f1:gigapath,…"``."""
    names = set(chosen.values())
    if len(names) == 1:
        return str(names.pop())
    return ",".join(f"f{fold}:{name}" for fold, name in sorted(chosen.items()))


def _delta_rows(cfg: Config, task: TaskSpec, loaded: list[Loaded], missing: list[Source],
                chosen: Mapping[int, str | None], metric: str, scores: Scores,
                samples: Mapping[int, foldstats.FoldSample]) -> list[dict[str, Any]]:
    """Each method minus the fold's reference expert, per fold and as the mean over folds (paired bootstrap)."""
    level, delta = float(cfg.section("report")["ci_level"]), DELTA_PREFIX + metric
    folds, reference = sorted(chosen), describe_reference(chosen)
    rows = [r for s in missing for r in _missing(task, s, folds, delta, f"no prediction file {s.path}", reference)]
    if any(name is None for name in chosen.values()):
        note = "no expert has validation and test predictions in every fold: no reference to compare with"
        return rows + [r for x in loaded for r in _missing(task, x.source, folds, delta, note, reference)]
    for item in loaded:
        own = scores[item.source.method]
        present = [f for f in folds if f in own]
        observed = {f: own[f][metric][0] - scores[chosen[f]][f][metric][0] for f in present}
        draws = {f: own[f][metric][1] - scores[chosen[f]][f][metric][1] for f in present}
        for f in folds:
            if f not in own:
                rows.append(_row(task, item.source, f, "test", delta, status="missing", reference=chosen[f],
                                 note=f"no test predictions for fold {f} in {item.source.path}"))
                continue
            undefined = np.isnan(observed[f])
            rows.append(_row(task, item.source, f, "test", delta, observed[f], n_samples=samples[f].n_rows[
                item.source.method], n_patients=len(samples[f].patients), status="undefined" if undefined else "ok",
                note=_undefined_note(task, metric, [f]) if undefined else "", reference=chosen[f]))
        if len(present) < len(folds):
            rows.append(_row(task, item.source, -1, "test", delta, statistic="mean", status="missing",
                             reference=reference, note=f"fold(s) {sorted(set(folds) - set(present))} missing"))
            continue
        stat = foldstats.mean_over_folds(observed, draws, level, delta, with_p=True)
        rows.append(_row(task, item.source, -1, "test", delta, stat.value, statistic="mean",
                         ci=(stat.ci_low, stat.ci_high), n_patients=sum(len(samples[f].patients) for f in folds),
                         n_undefined=stat.n_undefined, status="ok" if stat.folds_used else "undefined",
                         note=_undefined_note(task, metric, stat.folds_undefined) if stat.folds_undefined else "",
                         reference=reference, p_value=stat.p_value))
    return rows


def expected_folds(task: TaskSpec, loaded: list[Loaded]) -> list[int]:
    """Outer folds every method must have: the task's fold count and any fold a file holds."""
    seen = {int(f) for x in loaded for f in x.test()["fold"].unique()}
    return sorted(set(range(task.n_folds)) | seen)


def metrics_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows → the metrics table with stable dtypes (empty strings never stand for nulls)."""
    df = pd.DataFrame(rows, columns=METRICS_COLUMNS)
    for col in ("fold", "n_samples", "n_patients", "n_undefined"):
        df[col] = df[col].astype("int64")
    for col in ("value", "ci_low", "ci_high", "p_value"):
        df[col] = df[col].astype("float64")
    return df


def _fold_facts(experts: list[Loaded]) -> dict[str, dict[str, Any]]:
    """Per fold: was validation carved from train, and from which split source (the experts' metadata)."""
    facts = (experts[0].meta.get("folds") or {}) if experts else {}
    return {str(f): {"carve_val": bool(info.get("carve_val", False)), "split_source": info.get("split_source", "")}
            for f, info in facts.items()}


# ----------------------------------------------------------------------------- stage entry
def evaluate_task(cfg: Config, task: str) -> Path:
    """Score every expert and fusion prediction file of ``task`` → its metrics Parquet.

    Returns:
        The path of ``results/metrics/{task}.parquet``.
    """
    spec = cfg.task(task)
    metric = primary_metric(cfg, spec)
    metrics = scored_metrics(spec)
    loaded, missing = [], []
    for source in expected_sources(cfg, spec):
        item = load_source(source, spec)
        if item is None:
            log.warning("task %s: %s has no prediction file %s; its cells are reported missing",
                        task, source.method, source.path)
            missing.append(source)
        else:
            loaded.append(item)
    folds = expected_folds(spec, loaded)
    samples, scores = score_folds(cfg, spec, loaded, folds, metrics)
    rows: list[dict[str, Any]] = []
    for item in tqdm(loaded, desc=f"evaluate {task}", unit="method"):
        rows += _test_rows(cfg, spec, item, folds, metrics, samples, scores)
    for source in missing:
        rows += [r for m in metrics for r in _missing(spec, source, folds, m, f"no prediction file {source.path}")]
    experts = [x for x in loaded if x.source.family == "expert"]
    chosen, val_rows, rankings = choose_reference(cfg, spec, experts, folds, metric)
    rows += val_rows + _delta_rows(cfg, spec, loaded, missing, chosen, metric, scores, samples)
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
        "n_bootstrap": int(cfg.section("report")["n_bootstrap"]),
        "ci_level": float(cfg.section("report")["ci_level"]), "seed": cfg.seed,
        "missing": {s.method: str(s.path) for s in missing}, **seeds_meta,
    }
    log.info("task %s: %d metric rows, %d missing cells, best expert %s", task, len(df),
             int((df["status"] == "missing").sum()), meta["reference"])
    return write_parquet(df, cfg.layout.metrics(task), schema="metrics", meta=meta)

"""Stage entry `evaluate`: score every prediction file of one task → ``results/metrics/{task}.parquet``.

Experts, fusers and baselines are scored identically by :mod:`pathfuse.metrics`. The output is
the long ``metrics`` table of docs/architecture.md plus what only the predictions can give the
report (everything in one file, so the report reads one file per task):

* ``split == "test"``, ``fold >= 0``: each metric of each method per outer fold (test split).
* ``split == "test"``, ``fold == -1``: the metric of the pooled test predictions of all folds,
  with a patient-level bootstrap CI (``report.ci_level``, ``report.n_bootstrap`` resamples).
* ``split == "val"``: the experts' primary metric on each fold's validation split. These rows
  are what chooses the "best single expert" — per fold, on validation data only, so no test
  label decides which expert a method is compared with.
* ``metric == "delta_<primary>"``, ``fold == -1``: the paired bootstrap of each method's pooled
  primary metric minus that of the validation-selected expert (the chosen expert's test
  predictions of each fold, concatenated). ``value`` is the difference (method − reference,
  in the metric's own direction), ``ci_low``/``ci_high`` its CI, ``p_value`` the two-sided
  bootstrap p-value, ``reference`` names the chosen expert(s).

Extra columns beyond the contract: ``split``, ``status`` ("ok" | "missing"), ``note`` (why a
cell is missing), ``reference`` and ``p_value``. A prediction file that does not exist, or
lacks a fold's test rows, becomes rows with ``value`` NaN and ``status`` "missing" — never a
silently dropped method. A pooled row is only computed when every fold is present: pooling a
subset of folds would compare methods on different patients.
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

from pathfuse.config import Config, ConfigError, TaskSpec
from pathfuse.io import read_parquet, write_parquet
from pathfuse.metrics import HIGHER_IS_BETTER, bootstrap_ci, paired_bootstrap, score

log = logging.getLogger(__name__)

DELTA_PREFIX = "delta_"
#: Prediction columns scoring needs (embeddings and gate weights are left on disk).
_SCORE_COLUMNS = ["fold", "split", "oof", "sample_id", "patient_id", "label", "time", "event", "logits"]
METRICS_COLUMNS = [
    "task", "kind", "method", "family", "encoder", "fold", "split", "metric", "value", "ci_low",
    "ci_high", "n_samples", "status", "note", "reference", "p_value",
]


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


# ----------------------------------------------------------------------------- helpers
def primary_metric(cfg: Config, task: TaskSpec) -> str:
    """The task's primary metric: ``report.primary_metric`` override, else the registry's."""
    metric = cfg.section("report").get("primary_metric", {}).get(task.id) or task.primary_metric
    if metric not in task.metrics:
        raise ConfigError(
            f"report.primary_metric.{task.id}: {metric!r} is not one of the task's metrics "
            f"{list(task.metrics)}; pick one of them"
        )
    return metric


def fusion_methods(cfg: Config) -> list[str]:
    """Fusion methods of the run (``fusion.methods``; none when the key is absent)."""
    return list(cfg.section("fusion").get("methods", []))


def derive_seed(base: int, *parts: object) -> int:
    """A seed from the run seed and a unit of work, independent of job order."""
    return (base * 1_000_003 + zlib.crc32("|".join(map(str, parts)).encode())) % 2**32


def expected_sources(cfg: Config, task: TaskSpec) -> list[Source]:
    """Every prediction file the task should have: experts first, then fusion methods."""
    experts = [Source(enc, "expert", enc, cfg.layout.expert_predictions(task.id, enc)) for enc in task.encoders]
    fusers = [Source(m, None, None, cfg.layout.fusion_predictions(task.id, m)) for m in fusion_methods(cfg)]
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


def _row(task: TaskSpec, source: Source, fold: int, split: str, metric: str, value: float = np.nan,
         ci: tuple[float, float] = (np.nan, np.nan), n_samples: int = 0, note: str = "",
         reference: str | None = None, p_value: float = np.nan) -> dict[str, Any]:
    return {
        "task": task.id, "kind": task.kind, "method": source.method, "family": source.family,
        "encoder": source.encoder, "fold": fold, "split": split, "metric": metric, "value": value,
        "ci_low": ci[0], "ci_high": ci[1], "n_samples": n_samples,
        "status": "missing" if note else "ok", "note": note, "reference": reference, "p_value": p_value,
    }


# ----------------------------------------------------------------------------- scoring
def _test_rows(cfg: Config, task: TaskSpec, item: Loaded | Source, folds: list[int]) -> list[dict[str, Any]]:
    """Per-fold and pooled test rows of one source (missing cells when absent)."""
    rcfg = cfg.section("report")
    if isinstance(item, Source):
        note = f"no prediction file {item.path}"
        return [_row(task, item, f, "test", m, note=note) for f in [*folds, -1] for m in task.metrics]
    rows, absent = [], []
    for fold in folds:
        preds = item.test(fold)
        if preds.empty:
            absent.append(fold)
            note = f"no test predictions for fold {fold} in {item.source.path}"
            rows += [_row(task, item.source, fold, "test", m, note=note) for m in task.metrics]
            continue
        values = score(task, preds, task.metrics, bin_edges=item.bin_edges)
        rows += [_row(task, item.source, fold, "test", m, values[m], n_samples=len(preds)) for m in task.metrics]
    if absent:
        note = f"fold(s) {absent} missing: a pooled value over the other folds would not be comparable"
        return rows + [_row(task, item.source, -1, "test", m, note=note) for m in task.metrics]
    pooled = item.test()
    values = score(task, pooled, task.metrics, bin_edges=item.bin_edges)
    cis = bootstrap_ci(task, pooled, task.metrics, n_resamples=int(rcfg["n_bootstrap"]),
                       seed=derive_seed(cfg.seed, task.id, item.source.method, "bootstrap"),
                       level=float(rcfg["ci_level"]), bin_edges=item.bin_edges)
    return rows + [_row(task, item.source, -1, "test", m, values[m], cis[m], n_samples=len(pooled))
                   for m in task.metrics]


def _validation_rows(task: TaskSpec, expert: Loaded, folds: list[int], metric: str) -> list[dict[str, Any]]:
    """The expert's primary metric on each fold's validation split (for the best-expert choice)."""
    rows = []
    for fold in folds:
        preds = expert.val(fold)
        if preds.empty or expert.test(fold).empty:
            what = "validation" if preds.empty else "test"
            rows.append(_row(task, expert.source, fold, "val", metric,
                             note=f"no {what} predictions for fold {fold}: not eligible as reference"))
            continue
        value = score(task, preds, [metric], bin_edges=expert.bin_edges)[metric]
        rows.append(_row(task, expert.source, fold, "val", metric, value, n_samples=len(preds)))
    return rows


def select_best_expert(val_rows: pd.DataFrame, folds: list[int], metric: str,
                       order: Sequence[str]) -> dict[int, str] | None:
    """Per fold, the expert with the best validation score (ties: first in ``order``).

    Returns None when some fold has no expert with a validation score: then no reference
    exists and the paired rows are missing cells.
    """
    sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
    rank_of = {name: i for i, name in enumerate(order)}
    chosen = {}
    for fold in folds:
        cand = val_rows[(val_rows["fold"] == fold) & val_rows["value"].notna()]
        if cand.empty:
            return None
        best = max(cand.itertuples(), key=lambda r: (sign * r.value, -rank_of[r.method]))
        chosen[fold] = best.method
    return chosen


def describe_reference(chosen: Mapping[int, str]) -> str:
    """``"uni_v2"`` if one expert won every fold, else ``"f0:uni_v2,f1:gigapath,…"``."""
    names = set(chosen.values())
    if len(names) == 1:
        return names.pop()
    return ",".join(f"f{fold}:{name}" for fold, name in sorted(chosen.items()))


def _paired_rows(cfg: Config, task: TaskSpec, loaded: list[Loaded], missing: list[Source],
                 chosen: Mapping[int, str] | None, metric: str) -> list[dict[str, Any]]:
    """Paired bootstrap of every method against the validation-selected expert."""
    rcfg = cfg.section("report")
    delta = DELTA_PREFIX + metric
    if chosen is None:
        note = "no expert has validation predictions in every fold: no best expert to compare with"
        return [_row(task, s, -1, "test", delta, note=note) for s in [x.source for x in loaded] + missing]
    experts = {x.source.method: x for x in loaded if x.source.family == "expert"}
    ref_preds = pd.concat([experts[name].test(fold) for fold, name in sorted(chosen.items())])
    ref_edges = _composite_edges(experts, chosen) if task.kind == "survival" else None
    reference = describe_reference(chosen)
    rows = [_row(task, s, -1, "test", delta, note=f"no prediction file {s.path}", reference=reference)
            for s in missing]
    for item in loaded:
        present = set(item.test()["fold"].unique())
        if not set(chosen) <= present:
            rows.append(_row(task, item.source, -1, "test", delta, reference=reference,
                             note=f"fold(s) {sorted(set(chosen) - present)} missing"))
            continue
        out = paired_bootstrap(task, item.test(), ref_preds, metric, n_resamples=int(rcfg["n_bootstrap"]),
                               seed=derive_seed(cfg.seed, task.id, item.source.method, "paired"),
                               level=float(rcfg["ci_level"]), bin_edges_a=item.bin_edges, bin_edges_b=ref_edges)
        rows.append(_row(task, item.source, -1, "test", delta, out["diff"], (out["ci_low"], out["ci_high"]),
                         n_samples=int(out["n_patients"]), reference=reference, p_value=out["p_value"]))
    return rows


def _composite_edges(experts: Mapping[str, Loaded], chosen: Mapping[int, str]) -> dict[int, Any] | None:
    """Survival bin edges of the reference: each fold's edges from the expert chosen there."""
    edges = {}
    for fold, name in chosen.items():
        per_fold = {int(k): v for k, v in (experts[name].bin_edges or {}).items()}
        if fold not in per_fold:
            return None  # only the IBS needs edges; without them it is NaN, never wrong
        edges[fold] = per_fold[fold]
    return edges


def expected_folds(task: TaskSpec, loaded: list[Loaded]) -> list[int]:
    """Outer folds every method must have: the task's fold count and any fold a file holds."""
    seen = {int(f) for x in loaded for f in x.test()["fold"].unique()}
    return sorted(set(range(task.n_folds)) | seen)


def metrics_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows → the metrics table with stable dtypes (empty strings never stand for nulls)."""
    df = pd.DataFrame(rows, columns=METRICS_COLUMNS)
    df["fold"] = df["fold"].astype("int64")
    df["n_samples"] = df["n_samples"].astype("int64")
    for col in ("value", "ci_low", "ci_high", "p_value"):
        df[col] = df[col].astype("float64")
    return df


# ----------------------------------------------------------------------------- stage entry
def evaluate_task(cfg: Config, task: str) -> Path:
    """Score every expert and fusion prediction file of ``task`` → its metrics Parquet.

    Returns:
        The path of ``results/metrics/{task}.parquet``.
    """
    spec = cfg.task(task)
    metric = primary_metric(cfg, spec)
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
    rows: list[dict[str, Any]] = []
    for item in tqdm([*loaded, *missing], desc=f"evaluate {task}", unit="method"):
        rows += _test_rows(cfg, spec, item, folds)
    experts = [x for x in loaded if x.source.family == "expert"]
    val_rows = [r for x in experts for r in _validation_rows(spec, x, folds, metric)]
    rows += val_rows
    chosen = select_best_expert(metrics_frame(val_rows), folds, metric, spec.encoders)
    rows += _paired_rows(cfg, spec, loaded, missing, chosen, metric)
    df = metrics_frame(rows)
    meta = {
        "task": task, "kind": spec.kind, "primary_metric": metric, "folds": folds,
        "best_expert": {str(f): n for f, n in (chosen or {}).items()},
        "reference": describe_reference(chosen) if chosen else None,
        "n_bootstrap": int(cfg.section("report")["n_bootstrap"]),
        "ci_level": float(cfg.section("report")["ci_level"]), "seed": cfg.seed,
        "missing": {s.method: str(s.path) for s in missing},
    }
    log.info("task %s: %d metric rows, %d missing cells, best expert %s", task, len(df),
             int((df["status"] == "missing").sum()), meta["reference"])
    return write_parquet(df, cfg.layout.metrics(task), schema="metrics", meta=meta)

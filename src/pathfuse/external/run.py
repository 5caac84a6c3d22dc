"""Stage entry ``predict-external``: every trained expert and fusion model of a task applied to another cohort.

Nothing is fitted here. Each fold's expert head (its saved weights) predicts every sample of the
cohort; each fusion method's saved fold model (``fusion/{task}/{method}/model.json``) is applied
to that fold's expert logits. Both are kept per fold (``fold`` k) and as the **fold ensemble**
(``fold`` −1): the mean of the fold models' predictive distributions — classification: the mean
of their class probabilities (as log-probabilities); survival: the mean of their event
distributions over the T+1 outcomes, turned back into T hazard logits, bin j being the j-th
quantile bin of each fold's own training times (the ensemble's bin edges are the mean of the
folds' edges) — the rule of the ``mean_probs`` baseline, over folds instead of experts. LogitProd's
ensemble gate weights are the mean of its folds' weights.

A model trained under other settings, a fusion model fitted on other expert predictions, or
features from another encoder version are refused with the reason
(:class:`pathfuse.external.experts.ExternalError`). Experts whose encoder the cohort lacks, and
the methods that need them, are listed as missing with the reason in the manifest.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pathfuse import progress
from pathfuse.attention import write_attention
from pathfuse.config import Config, TaskSpec
from pathfuse.experts.predict import prediction_frame
from pathfuse.external.experts import ExternalError, predict_expert
from pathfuse.external.samples import ExternalCohort, external_cohort
from pathfuse.fusion import FUSERS, apply
from pathfuse.io import read_parquet_meta, write_parquet
from pathfuse.plan import Planner

log = logging.getLogger(__name__)

#: ``fold`` of the fold-ensemble rows (the external cohort's headline prediction).
ENSEMBLE = -1
ENSEMBLE_RULE = ("mean over the fold models of their predictive distributions (classification: class "
                 "probabilities; survival: event distributions over T+1 outcomes, bin j = each fold's j-th "
                 "bin, edges averaged); gate weights: mean over folds")


def predict_external(cfg: Config, task: str, cohort: str) -> Path:
    """Predict ``cohort`` with every expert and fusion method of ``task``; return the manifest path."""
    spec = cfg.task(task)
    ext = external_cohort(cfg, spec, cohort)
    log.info("task %s, cohort %s: %d samples%s; experts %s%s", task, cohort, len(ext.samples),
             "" if ext.labelled else " (no labels: predictions only)", ", ".join(ext.task.encoders),
             f"; missing {', '.join(ext.missing)}" if ext.missing else "")
    methods = list(cfg.settings.fusion.methods)
    entries: list[dict[str, Any]] = []
    experts: dict[str, dict[int, np.ndarray]] = {}
    edges = _bin_edges(cfg, spec)
    with progress.scope("job", len(spec.encoders) + len(methods), interval=cfg.settings.logging.progress_interval_s,
                        task=task, cohort=cohort) as report:
        for encoder in spec.encoders:
            report.note(source=encoder)
            if encoder in ext.missing:
                entries.append(_entry(cfg, ext, encoder, "expert", None, ext.missing[encoder]))
            else:
                rows, attention = predict_expert(cfg, ext.task, encoder, cohort, ext.samples)
                experts[encoder] = {int(k): np.stack(list(rows.loc[rows["fold"] == k, "logits"]))
                                    for k in sorted(rows["fold"].unique())}
                write_attention([attention], cfg.layout.external_attention(task, cohort, encoder),
                                meta={"task": task, "encoder": encoder, "cohort": cohort, "split": "external",
                                      "model": "outer"})
                entries.append(_entry(cfg, ext, encoder, "expert", _write(cfg, ext, encoder, "expert",
                                                                          experts[encoder], None, edges), ""))
            report.advance()
        for method in methods:
            report.note(source=method)
            entries.append(_method(cfg, ext, method, experts, edges))
            report.advance()
    manifest = pd.DataFrame(entries, columns=["source", "family", "path", "status", "note"])
    meta = {"task": task, "cohort": cohort, "labelled": ext.labelled, "missing_experts": ext.missing,
            "n_samples": len(ext.samples), "dropped": ext.samples.attrs.get("dropped", {}),
            "patients": ext.samples.attrs.get("patients"), "ensemble": ENSEMBLE_RULE}
    return write_parquet(manifest, cfg.layout.external_manifest(task, cohort), schema="external_manifest", meta=meta)


def _method(cfg: Config, ext: ExternalCohort, method: str, experts: dict[str, dict[int, np.ndarray]],
            edges: dict[str, list[float]] | None) -> dict[str, Any]:
    """One fusion method's saved fold models applied to the experts' external logits (or why not)."""
    declared = FUSERS.get(method)
    if ext.missing:
        return _entry(cfg, ext, method, declared.family, None,
                      f"needs the expert(s) of {', '.join(ext.missing)}, which cannot predict this cohort")
    if declared.apply is None:
        return _entry(cfg, ext, method, declared.family, None, declared.no_apply)
    record = fusion_model(cfg, ext.task.id, method)
    order = record["encoders"]
    logits, gates = {}, {}
    for fold, model in record["folds"].items():
        z = np.stack([experts[e][int(fold)] for e in order], axis=1)  # [N, M, K] in the fit's expert order
        logits[int(fold)], w = declared.apply_fold(ext.task, model, z)
        if w is not None:
            gates[int(fold)] = w
    path = _write(cfg, ext, method, declared.family, logits, gates or None, edges)
    return _entry(cfg, ext, method, declared.family, path, "")


def fusion_model(cfg: Config, task: str, method: str) -> dict[str, Any]:
    """A method's fitted folds, refused unless fitted under this config's settings on today's expert predictions."""
    path = cfg.layout.fusion_model(task, method)
    if not path.exists():
        raise ExternalError(f"{method} of task {task}: no fitted model {path}; run the fuse stage")
    record: dict[str, Any] = json.loads(path.read_text())
    plan = Planner(cfg).fuse_methods(task)[method]
    if record.get("settings_digest") != plan.digest:
        raise ExternalError(f"refused {path}: fitted under fusion settings digest {record.get('settings_digest')}, "
                            f"this config gives {plan.digest}; rerun the fuse stage under this config")
    if record.get("digest") != plan.fingerprint():
        raise ExternalError(f"refused {path}: fitted on other expert predictions than the run now holds "
                            "(an expert was retrained since); rerun the fuse stage")
    return record


def _bin_edges(cfg: Config, task: TaskSpec) -> dict[str, list[float]] | None:
    """Survival: each fold's bin edges (the first expert's record) and the ensemble's mean edges."""
    if not task.kind_strategy.time_to_event:
        return None
    edges: dict[str, list[float]] = read_parquet_meta(cfg.layout.expert_predictions(task.id, task.encoders[0]),
                                                      schema="predictions")["bin_edges"]
    return {**edges, str(ENSEMBLE): np.mean([edges[k] for k in sorted(edges)], axis=0).tolist()}


def _write(cfg: Config, ext: ExternalCohort, source: str, family: str, logits: dict[int, np.ndarray],
           gates: dict[int, np.ndarray] | None, edges: dict[str, list[float]] | None) -> Path:
    """A source's external rows, per fold and the fold ensemble, in the ``predictions`` contract."""
    s = ext.samples
    folds = sorted(logits)
    ensemble, _ = apply.mean_probs(ext.task, {}, np.stack([logits[k] for k in folds], axis=1))
    if gates is not None:
        gates = {**gates, ENSEMBLE: np.mean([gates[k] for k in folds], axis=0)}
    frames = [prediction_frame(fold=k, split="external", oof=False, sample_ids=list(s["sample_id"]),
                               patient_ids=list(s["patient_id"]), labels=s["label"], times=s["time"], events=s["event"],
                               logits=z, gate_weights=None if gates is None else gates[k])
              for k, z in [*((k, logits[k]) for k in folds), (ENSEMBLE, ensemble)]]
    spec = ext.task
    meta = {"task": spec.id, "kind": spec.kind, "method": source, "family": family, "encoders": list(spec.encoders),
            "classes": spec.display_classes if spec.kind_strategy.has_classes else None,
            "n_bins": spec.n_bins if spec.kind_strategy.time_to_event else None, "bin_edges": edges,
            "cohort": ext.cohort, "split": "external", "labelled": ext.labelled, "ensemble": ENSEMBLE_RULE,
            "patients": s.attrs.get("patients"), "dropped": s.attrs.get("dropped", {}), "seed": cfg.seed}
    return write_parquet(pd.concat(frames, ignore_index=True),
                         cfg.layout.external_predictions(spec.id, ext.cohort, source), schema="predictions", meta=meta)


def _entry(cfg: Config, ext: ExternalCohort, source: str, family: str, path: Path | None, note: str) -> dict[str, Any]:
    """A manifest row: the source's file (relative to the manifest) or, when missing, why."""
    folder = cfg.layout.external_manifest(ext.task.id, ext.cohort).parent
    if path is None:
        log.warning("task %s, cohort %s: %s missing: %s", ext.task.id, ext.cohort, source, note)
    return {"source": source, "family": family, "path": "" if path is None else str(path.relative_to(folder)),
            "status": "missing" if path is None else "ok", "note": note}

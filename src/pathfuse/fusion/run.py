"""Stage entry ``fuse``: every fusion method of one task, all folds → one predictions file per method.

Each method's file is a unit of work, written atomically once all its folds are done. The unit of
recomputation is the (task, method): a re-run (a changed setting, a killed job) keeps a method's
existing file when its digest — the job plan's digest of the settings it reads, plus the content
of the files it reads (:meth:`pathfuse.plan.digests.MethodPlan.fingerprint`) — matches the one in
the file's metadata, and refits the others. The task's fusion manifest, written last, lists every
method's file with its digest and SHA-256: it is the job's one Snakemake-tracked output, so
Snakemake never deletes the method files it keeps (:mod:`pathfuse.plan.fusion`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from pathfuse import progress
from pathfuse.config import Config
from pathfuse.fusion import FUSERS, FoldOutput, applicable_methods
from pathfuse.fusion.context import FusionContext
from pathfuse.fusion.inputs import load_context
from pathfuse.io import SchemaError, read_parquet_meta, write_json, write_parquet
from pathfuse.plan import Planner
from pathfuse.plan.fusion import method_settings
from pathfuse.reproducibility import file_sha256
from pathfuse.seeds import replicate_payload

log = logging.getLogger(__name__)


def fuse_task(cfg: Config, task: str, seed: int = 0) -> list[Path]:
    """Train and apply every method of ``fusion.methods`` to ``task``; return the files written.

    Inputs are the experts' predictions of every encoder of the task (and, for Shazam and
    concat, the teachers' features). Outputs follow the ``predictions`` contract of
    docs/architecture.md, with per-fold cost facts in the metadata. ``seed`` > 0 is a replicate
    (``experts.n_seeds``): that seed's experts in, its own fusers' training seeds, its own paths.
    """
    for method in cfg.settings.fusion.methods:
        FUSERS.get(method)  # an unknown name fails before any work
    methods = applicable_methods(cfg.settings.fusion.methods, cfg.task(task).is_slide_task)
    skipped = [m for m in cfg.settings.fusion.methods if m not in methods]
    if skipped:
        log.info("task %s: not applicable, not fitted: %s", task, ", ".join(skipped))
    plan = Planner(cfg)
    outputs = {m: cfg.layout.fusion_predictions(task, m, seed) for m in methods}
    method_plans = plan.fuse_methods(task, seed)
    digests = {m: p.fingerprint() for m, p in method_plans.items()}
    todo = [m for m in methods if not _up_to_date(outputs[m], digests[m], _model_path(cfg, task, m, seed))]
    kept = [m for m in methods if m not in todo]
    if kept:
        log.info("task %s: up to date, kept: %s", task, ", ".join(kept))
    if todo:
        log.info("task %s: to fit: %s", task, ", ".join(todo))
        _fit(cfg, plan, task, seed, todo, digests, {m: method_plans[m].digest for m in todo})
    write_manifest(cfg.layout.fusion_manifest(task, seed), task, seed, outputs, digests)
    return list(outputs.values())


def _fit(cfg: Config, plan: Planner, task: str, seed: int, todo: list[str], digests: dict[str, str],
         settings_digests: dict[str, str]) -> None:
    """Fit each method of ``todo`` on every fold and write its model and predictions files (a step per method).

    The model file (methods with an ``apply`` function) is written first: a predictions file
    that exists always has the fitted folds beside it that external cohorts and
    ``pathfuse predict`` apply.
    """
    with progress.scope("job", len(todo), interval=cfg.settings.logging.progress_interval_s, task=task,
                        seed=seed or None) as report:
        ctx = load_context(cfg, task, seed)
        _warm_up_torch()
        if any(FUSERS.get(m).needs_features for m in todo):
            ctx.features  # noqa: B018 - locate/read the teachers' features once, outside any method's clock
        for i, method in enumerate(todo):
            report.note(method=f"{i + 1}/{len(todo)}")
            results = _fit_method(ctx, method)
            frame = pd.concat([_fold_frame(ctx, fold, out) for fold, out in results.items()], ignore_index=True)
            if (model_path := _model_path(cfg, task, method, seed)) is not None:
                write_json({"task": task, "method": method, "encoders": ctx.encoders, "digest": digests[method],
                            "settings_digest": settings_digests[method],
                            "folds": {str(f): out.model for f, out in results.items()}}, model_path)
            write_parquet(frame, cfg.layout.fusion_predictions(task, method, seed), schema="predictions",
                          meta=_metadata(ctx, method_settings(plan, task, method), method, results, digests[method]))
            report.advance()


def write_manifest(path: Path, task: str, seed: int, outputs: dict[str, Path], digests: dict[str, str]) -> None:
    """The task's fusion manifest: per method its file (relative to the manifest), digest and SHA-256.

    Only content, nothing about this run (fitted or kept): a job that keeps every method writes
    the same bytes, so evaluate and report do not rerun.
    """
    rows = [{"method": m, "family": FUSERS.get(m).family, "path": str(p.relative_to(path.parent)),
             "digest": digests[m], "sha256": file_sha256(p)} for m, p in outputs.items()]
    write_parquet(pd.DataFrame(rows, columns=["method", "family", "path", "digest", "sha256"]), path,
                  schema="fusion_manifest", meta={"task": task, **replicate_payload(seed)})


def _fit_method(ctx: FusionContext, method: str) -> dict[int, FoldOutput]:
    """Every fold of one method, as one unit of the job's progress lines (a step per fold)."""
    with progress.scope(method, len(ctx.folds)) as report:
        results = {}
        for k, fold in enumerate(ctx.folds):
            report.note(fold=f"{k + 1}/{len(ctx.folds)}")
            results[fold] = FUSERS.get(method).fit_fold(ctx, fold)
            report.advance()
    return results


def _warm_up_torch() -> None:
    """Pay torch's one-time lazy imports before any method's clock starts.

    The first optimizer a process builds imports ``torch._dynamo`` (seconds); without this,
    whichever method runs first would be charged for it in its ``train_seconds``.
    """
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.0)


def _fold_frame(ctx: FusionContext, fold: int, out: FoldOutput) -> pd.DataFrame:
    """Contract rows of one fold: every block the method predicted."""
    parts = []
    for key, logits in out.logits.items():
        split, oof = key
        frame = ctx.block(fold, split, oof).frame(fold, split, oof)
        frame["logits"] = list(np.asarray(logits, dtype=np.float32))
        frame["embedding"] = None
        gates = out.gate_weights.get(key) if out.gate_weights else None
        frame["gate_weights"] = list(np.asarray(gates, dtype=np.float32)) if gates is not None else None
        parts.append(frame)
    return pd.concat(parts, ignore_index=True)


def _metadata(ctx: FusionContext, settings: dict[str, Any], method: str, results: dict[int, FoldOutput],
              digest: str) -> dict[str, Any]:
    spec = FUSERS.get(method)
    kind = ctx.task.kind_strategy
    meta: dict[str, Any] = {
        "task": ctx.task.id, "kind": ctx.kind, "method": method, "family": spec.family,
        "description": spec.description, "encoders": ctx.encoders,
        "classes": ctx.classes if kind.has_classes else None,
        "folds": {str(f): {**ctx.fold_facts(f), **out.cost} for f, out in results.items()},
        "dropped": ctx.dropped, "seed": ctx.cfg.seed, **replicate_payload(ctx.replicate),
        "settings": settings,
        "digest": digest,
    }
    if kind.time_to_event:
        meta["n_bins"] = ctx.expert_meta.get("n_bins", ctx.task.n_bins)
        meta["bin_edges"] = {str(f): e for f, e in (ctx.bin_edges or {}).items()}
    if method == "logitprod":
        # LogitProd: one gate per survival outcome, else one gate.
        n_groups = (ctx.task.n_bins + 1) if kind.time_to_event else 1
        groups = "survival outcomes (bins 0..T-1, then survived)" if kind.time_to_event else "one"
        meta["gate_layout"] = {"n_groups": n_groups, "n_experts": len(ctx.encoders), "order": "group-major",
                               "groups": groups}
    return meta


def _model_path(cfg: Config, task: str, method: str, seed: int) -> Path | None:
    """Where a method that can be applied to new slides keeps its fitted folds (None: it has no ``apply``)."""
    return cfg.layout.fusion_model(task, method, seed) if FUSERS.get(method).apply else None


def _up_to_date(path: Path, digest: str, model: Path | None) -> bool:
    if not path.exists() or (model is not None and not model.exists()):
        return False
    try:
        return read_parquet_meta(path, schema="predictions").get("digest") == digest
    except (SchemaError, OSError, ValueError):
        return False

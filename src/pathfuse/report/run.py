"""Stage entry `report`: the five benchmark tables, their Markdown/HTML copies and the plots.

Reads ``results/metrics/{task}.parquet`` of every task of the run (written by
:func:`pathfuse.evaluation.run.evaluate_task`) and, for cost and gate weights, the fusion
prediction files (metadata and the ``gate_weights`` column only), and for the per-task
training-curve figures the experts' ``training_curve.parquet``; for the attention figures the
experts' test predictions and ``attention.parquet``, the slides' thumbnails and tile images
(:mod:`pathfuse.report.attention`). A task without a metrics file,
or a method without predictions, shows up as missing cells — counted in the summary.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pathfuse.config import Config
from pathfuse.fusion import FUSERS
from pathfuse.io import atomic_path, read_parquet, read_parquet_meta, write_parquet
from pathfuse.paths import REPORT_TABLES as TABLES
from pathfuse.report import attention, curves, external, fusion_plots, fusion_tables, left_out, markdown, plots, tables
from pathfuse.report.drawing import Figure, draw, job_threads
from pathfuse.selection import primary_metric

log = logging.getLogger(__name__)

def report_outputs(cfg: Config) -> dict[str, list[Path]]:
    """Every file :func:`build_report` writes, by kind (the rule declares the same list)."""
    return cfg.layout.report_outputs(cfg.task_ids)


# ----------------------------------------------------------------------------- inputs
def method_order(cfg: Config) -> list[str]:
    """Experts in encoder order (run-wide, then task-specific ones), then fusion methods."""
    encoders = list(dict.fromkeys([*cfg.encoder_ids, *(e for t in cfg.tasks for e in t.encoders)]))
    return encoders + cfg.fusion_methods


def expected_cells(cfg: Config) -> pd.DataFrame:
    """One row per (task, method) the run should produce; fusion families filled later."""
    rows: list[dict[str, str | None]] = []
    for task in cfg.tasks:
        rows += [{"task": task.id, "kind": task.kind, "method": e, "family": "expert", "encoder": e}
                 for e in task.encoders]
        rows += [{"task": task.id, "kind": task.kind, "method": m, "family": None, "encoder": None}
                 for m in cfg.fusion_methods]
    return pd.DataFrame(rows, columns=["task", "kind", "method", "family", "encoder"])


def load_metrics(cfg: Config) -> tuple[pd.DataFrame, dict[str, dict[str, Any]]]:
    """All tasks' metrics rows and each task's metrics metadata.

    A task without a metrics file is logged and left out here; the benchmark tables list its cells
    as missing, so one failed task does not block the report.
    """
    frames, metas = [], {}
    for task in cfg.task_ids:
        path = cfg.layout.metrics(task)
        if not path.exists():
            log.warning("task %s has no metrics file %s: its cells are reported missing", task, path)
            continue
        df, metas[task] = read_parquet(path, schema="metrics")
        frames.append(df)
    if not frames:
        raise FileNotFoundError(
            f"no metrics file for any task under {cfg.layout.metrics('x').parent}; run the evaluate "
            "rule (snakemake) or `pathfuse evaluate --task <task>` first"
        )
    return pd.concat(frames, ignore_index=True), metas


def task_facts(metas: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Per task, what a reader must know beside the numbers.

    Folds whose validation was carved from train, and why; and when the unit of the splits and the
    bootstrap is not a patient (a slide table without case_id, a tile dataset without groups: CIs
    per slide or per tile).
    """
    out = {}
    for task, meta in metas.items():
        notes = []
        facts = meta.get("fold_facts") or {}
        carved = sorted(int(f) for f, info in facts.items() if info.get("carve_val"))
        if carved:
            sources = sorted({str(facts[str(f)].get("split_source") or "") for f in carved} - {""})
            notes.append(f"validation carved from train in fold(s) {carved} ({_carve_reason(sources)})")
        patient_note = (meta.get("patients") or {}).get("note")
        if patient_note:
            notes.append(patient_note)
        if notes:
            out[task] = "; ".join(notes)
    return out


def resampling_units(metas: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Per task, what the splits keep together and the bootstrap resamples: patient, slide, group or tile."""
    return {task: str((meta.get("patients") or {}).get("unit") or "patient") for task, meta in metas.items()}


def _carve_reason(sources: list[str]) -> str:
    """Why a fold had to carve validation: generated folds have none; a published split had val == test or none."""
    if not sources:
        return "the split had no usable validation part"
    if all(s in ("kfold", "holdout") or s.startswith("official") for s in sources):
        return f"{', '.join(sources)}: the split has no validation part"
    return f"{', '.join(sources)}: the published split's val equals its test, or it has no val"


def fusion_records(cfg: Config) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cost rows (task, method, fold) and gate-weight rows (task, method, expert) of the fusion files.

    Cost rows carry ``inner_expert_seconds``: the method's share of the fold's inner-fold expert
    trainings (summed over the task's experts, ``inner_seconds`` in their metadata), split equally
    among the methods of the run that read out-of-fold logits (``uses_inner_experts``: what the
    method itself read, not what other methods asked for), so the shares add up to what was spent
    and nothing is charged twice; and ``required_expert_seconds``: all of those trainings for a
    method that read them (what the method costs on its own, beside the shared outer experts).
    """
    cost, gates = [], []
    for task in cfg.tasks:
        inner = expert_seconds(cfg, task.id, task.encoders, "inner_seconds")
        rows = []
        for method in cfg.fusion_methods:
            path = cfg.layout.fusion_predictions(task.id, method)
            if not path.exists():
                continue
            meta = read_parquet_meta(path, schema="predictions")
            family = meta.get("family", "fuser")
            for fold, info in sorted((meta.get("folds") or {}).items(), key=lambda kv: int(kv[0])):
                rows.append({"task": task.id, "method": method, "family": family, "fold": int(fold),
                             "train_seconds": _number(info.get("train_seconds")),
                             "params": _number(info.get("params")), "flops": _number(info.get("flops")),
                             "_uses": bool(info.get("uses_inner_experts"))})
            gates += _gate_rows(task.id, task.kind, method, path, meta)
        for fold in {r["fold"] for r in rows}:
            users = [r for r in rows if r["fold"] == fold and r["_uses"]]
            for r in rows:
                if r["fold"] == fold:
                    r["inner_expert_seconds"] = inner.get(fold, np.nan) / len(users) if r["_uses"] else 0.0
                    r["required_expert_seconds"] = inner.get(fold, np.nan) if r["_uses"] else 0.0
        cost += [{k: v for k, v in r.items() if k != "_uses"} for r in rows]
    cost_df = pd.DataFrame(cost, columns=["task", "method", "family", "fold", "train_seconds", "params", "flops",
                                          "inner_expert_seconds", "required_expert_seconds"])
    gate_df = pd.DataFrame(gates, columns=["task", "kind", "method", "expert", "weight_mean", "weight_sd",
                                           "n_samples", "status", "kl_from_uniform", "max_weight",
                                           "folds_kept_first_epoch", "near_uniform"])
    return cost_df, gate_df


def expert_seconds(cfg: Config, task: str, encoders: Sequence[str], key: str) -> dict[int, float]:
    """Per fold, the seconds all experts of the task spent (``key``: ``train_seconds`` outer, ``inner_seconds``)."""
    out: dict[int, float] = {}
    for encoder in encoders:
        path = cfg.layout.expert_predictions(task, encoder)
        if not path.exists():
            continue
        for fold, info in (read_parquet_meta(path, schema="predictions").get("folds") or {}).items():
            out[int(fold)] = out.get(int(fold), 0.0) + _number(info.get(key))
    return out


def expert_curves(cfg: Config, task: str) -> dict[str, pd.DataFrame | None]:
    """Each expert's training curve of one task, None where the expert wrote none."""
    out: dict[str, pd.DataFrame | None] = {}
    for encoder in cfg.task(task).encoders:
        path = cfg.layout.expert_curve(task, encoder)
        out[encoder] = read_parquet(path, schema="training_curve")[0] if path.exists() else None
    return out


def _write_text(text: str, path: Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def _number(value: Any) -> float:
    return float(value) if value is not None else np.nan


def _gate_rows(task: str, kind: str, method: str, path: Path, meta: dict[str, Any]) -> list[dict[str, Any]]:
    """Mean gate weight per expert over the test predictions of all folds (none if ungated)."""
    df, _ = read_parquet(path, schema="predictions", columns=["split", "oof", "gate_weights"])
    df = df[(df["split"] == "test") & ~df["oof"].astype(bool) & df["gate_weights"].notna()]
    if df.empty:
        return []
    experts = list(meta.get("encoders") or [])
    mean, sd = fusion_tables.mean_gate_weights(np.stack([np.asarray(g) for g in df["gate_weights"]]), len(experts))
    folds = list((meta.get("folds") or {}).values())
    kl = float(np.nanmean([_number(f.get("gate_kl_from_uniform")) for f in folds])) if folds else np.nan
    diag = {"kl_from_uniform": kl,
            "max_weight": float(np.nanmean([_number(f.get("gate_max_weight")) for f in folds])) if folds else np.nan,
            "folds_kept_first_epoch": sum(bool(f.get("kept_first_epoch")) for f in folds),
            "near_uniform": bool(kl < fusion_tables.NEAR_UNIFORM_KL)}
    return [{"task": task, "kind": kind, "method": method, "expert": e, "weight_mean": float(m),
             "weight_sd": float(s), "n_samples": len(df), "status": "ok", **diag}
            for e, m, s in zip(experts, mean, sd, strict=True)]


def _complete_gates(cfg: Config, gates: pd.DataFrame) -> pd.DataFrame:
    """Missing rows for tasks where a gated method (gated on some task) has no gate weights."""
    rows = []
    for method in gates["method"].unique():
        have = set(gates.loc[gates["method"] == method, "task"])
        for task in cfg.tasks:
            if task.id not in have:
                applies = method not in FUSERS or FUSERS.get(method).not_applicable(task.is_slide_task) is None
                rows += [{"task": task.id, "kind": task.kind, "method": method, "expert": e,
                          "weight_mean": np.nan, "weight_sd": np.nan, "n_samples": 0,
                          "status": "missing" if applies else "not applicable",
                          "kl_from_uniform": np.nan, "max_weight": np.nan, "folds_kept_first_epoch": 0,
                          "near_uniform": False}
                         for e in task.encoders]
    return pd.concat([gates, pd.DataFrame(rows, columns=gates.columns)], ignore_index=True) if rows else gates


def _outer_expert_seconds(cfg: Config) -> float:
    """The outer experts' training seconds of the whole run: what every method reads, drawn as a reference."""
    return float(sum(sum(expert_seconds(cfg, t.id, t.encoders, "train_seconds").values()) for t in cfg.tasks))


# ----------------------------------------------------------------------------- per-task figures
def _task_figures(cfg: Config, task: str) -> list[Path]:
    """One task's training-curve and attention figures."""
    figure = cfg.layout.expert_curves_figure(task)
    written = curves.training_curves(task, expert_curves(cfg, task), figure.with_suffix(""))
    return written + attention.attention_figure(cfg, task, cfg.layout.attention_figure(task).with_suffix(""))


# ----------------------------------------------------------------------------- stage entry
def build_report(cfg: Config) -> list[Path]:
    """Write the benchmark tables (Parquet + Markdown + HTML) and plots of the whole run.

    Returns:
        Every path written (tables, their copies, PNG and SVG plots).
    """
    settings = cfg.settings.report
    task_order, order = cfg.task_ids, method_order(cfg)
    primary = {t: primary_metric(cfg, cfg.task(t)) for t in task_order}
    metrics, metric_metas = load_metrics(cfg)
    expected = expected_cells(cfg)
    families = pd.concat([metrics[["method", "family"]], expected[["method", "family"]]])
    filled = tables.fill_family(families)
    family_of = filled.groupby("method")["family"].agg(lambda s: s.mode().iloc[0])
    metrics["family"], expected["family"] = metrics["method"].map(family_of), expected["method"].map(family_of)
    order = sorted(order, key=lambda m: tables.FAMILY_ORDER.index(family_of.get(m, "unknown")))

    bench = tables.order_rows(tables.benchmark_table(metrics), task_order, order, extra=["metric"])
    ranks = tables.order_rows(tables.ranks_table(bench, metrics, expected, primary, settings.rank_statistic,
                                                 settings.rank_families, float(settings.ci_level)), task_order, order)
    external_rows = tables.order_rows(external.external_table(external.load_external(cfg), ranks, primary),
                                      task_order, order, extra=["cohort"])
    summary = tables.summary_table(ranks).merge(external.external_summary(external_rows), on="method", how="left")
    summary["external_n"] = summary["external_n"].astype("float64").fillna(0).astype("int64")
    missing = tables.missing_cells(ranks)
    cost_records, gate_records = fusion_records(cfg)
    cost_records["family"] = cost_records["method"].map(family_of).fillna(cost_records["family"])
    cost = fusion_tables.cost_table(cost_records, expected[expected["family"] != "expert"], settings.cost_reference)
    gates = tables.order_rows(_complete_gates(cfg, gate_records).assign(family="fuser"), task_order, order,
                              extra=["expert"]).drop(columns="family")
    frames = {"benchmark": bench, "ranks": ranks, "summary": summary, "cost": cost, "gate_weights": gates,
              "left_out": left_out.left_out_table(cfg), "external": external_rows}

    meta = {
        "tasks": task_order, "methods": order, "primary_metric": primary,
        "rank_statistic": settings.rank_statistic, "rank_families": list(settings.rank_families),
        "ci_level": settings.ci_level, "n_bootstrap": settings.n_bootstrap, "cost_reference": settings.cost_reference,
        "missing_cells": len(missing), "expected_cells": len(ranks),
        "best_expert": ranks.drop_duplicates("task").set_index("task")["reference"].to_dict(),
        "task_facts": task_facts(metric_metas), "resampling_unit": resampling_units(metric_metas),
        "significance_correction": "holm across each method's tasks",
    }
    outputs = report_outputs(cfg)
    written = [write_parquet(frames[n], p, schema=f"table:{n}", meta=meta) for n, p in zip(TABLES, outputs["tables"],
                                                                                            strict=True)]
    docs = markdown.render_all(frames, missing, meta)
    for name, md_path, html_path in zip(TABLES, outputs["markdown"], outputs["html"], strict=True):
        written.append(_write_text(docs[name].markdown, md_path))
        written.append(_write_text(docs[name].html, html_path))
    stem = cfg.layout.report_dir()
    figures: list[Figure] = [
        (plots.heatmap, (ranks, task_order, order, stem / "heatmap", settings.rank_families)),
        (plots.gains, (ranks, task_order, order, stem / "gains")),
        (fusion_plots.gate_weights, (gates, task_order, stem / "gate_weights")),
        (fusion_plots.cost, (cost, summary, settings.cost_reference, stem / "cost")),
        (fusion_plots.cost_gain, (cost, ranks, _outer_expert_seconds(cfg), float(settings.ci_level),
                                  stem / "cost_gain")),
        (external.external_plot, (external_rows, stem / "external")),
        *((_task_figures, (cfg, task)) for task in task_order),
    ]
    written += draw(figures, job_threads())
    log.info("report: %d tasks, %d methods, %d of %d cells missing; wrote %d files", len(task_order),
             len(order), len(missing), len(ranks), len(written))
    return written

"""Human-readable copies of the tables: Markdown and HTML.

Markdown is for GitHub and terminals; HTML is for the Snakemake report, which shows HTML files
inline and offers other files only as downloads.

Both come from the same "views" (this module): small string DataFrames where a winner is
wrapped in ``**…**`` and a missing cell is "—"; a yes/no column whose inputs are missing says
"unknown". Views are shaped for reading (task × method matrices), not for computing; the Parquet
tables stay the source of truth, and every cell shows the value of its own row: a view is built
from lists in the row order of the view, never from a Series whose index pandas would align
(a task-indexed Series assigned to a range-indexed view is all NaN). Rendering a view and
formatting its numbers: :mod:`pathfuse.report.rendering`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pathfuse.evaluation.metrics import HIGHER_IS_BETTER
from pathfuse.report.fusion_tables import NEAR_UNIFORM_KL
from pathfuse.report.left_out import left_out_view
from pathfuse.report.rendering import (
    MISSING,
    Doc,
    Section,
    bold,
    count,
    document,
    num,
    ratio,
    seconds,
    signed_points,
)

#: "gate moved?" where the gate's movement was not recorded.
UNKNOWN = "unknown"


# ----------------------------------------------------------------------------- views
def benchmark_sections(bench: pd.DataFrame, primary: Mapping[str, str], level: int,
                       task_facts: Mapping[str, str] | None = None) -> list[Section]:
    """One methods × metrics section per task, for the benchmark document.

    Cells are "mean ± sd" (best in bold); then the primary metric's mean with its ``level`` % CI
    (and the labelled pooled value where there is one), folds, test patients, and the task's facts.
    """
    task_facts = task_facts or {}
    sections = []
    for task, rows in bench.groupby("task", sort=False):
        prim = primary.get(str(task), rows["metric"].iloc[0])
        metrics = [prim, *(m for m in dict.fromkeys(rows["metric"]) if m != prim)]
        view = pd.DataFrame({"method": list(dict.fromkeys(rows["method"]))})
        by = rows.set_index(["method", "metric"])
        view["family"] = [by.loc[m, "family"].iloc[0] for m in view["method"]]
        for metric in metrics:
            col = by.xs(metric, level="metric").reindex(view["method"])
            best = col["mean"].max() if HIGHER_IS_BETTER[metric] else col["mean"].min()
            view[metric] = [bold(f"{num(mu)} ± {num(sd)}" if not pd.isna(sd) else num(mu), mu == best)
                            for mu, sd in zip(col["mean"], col["sd"], strict=True)]
        col = by.xs(prim, level="metric").reindex(view["method"])
        view[f"{prim} mean [{level}% CI]"] = [
            f"{num(v)} [{num(lo)}, {num(hi)}]" if not pd.isna(v) else MISSING
            for v, lo, hi in zip(col["mean"], col["ci_low"], col["ci_high"], strict=True)]
        if col["pooled"].notna().any():
            view[f"{prim} POOLED over folds [{level}% CI]"] = [
                f"{num(v)} [{num(lo)}, {num(hi)}]" if not pd.isna(v) else MISSING
                for v, lo, hi in zip(col["pooled"], col["pooled_ci_low"], col["pooled_ci_high"], strict=True)]
        view["folds"] = [f"{a}/{b}" + (f" (undefined: {u})" if u else "")
                         for a, b, u in zip(col["n_folds"], col["n_folds_expected"], col["undefined_folds"],
                                            strict=True)]
        view["test patients per fold"] = list(col["n_test_patients"])
        kind = rows["kind"].iloc[0]
        facts = task_facts.get(str(task), "")
        sections.append((f"{task} ({kind}; primary: {prim}){'; ' + facts if facts else ''}", view))
    return sections


def ranks_sections(ranks: pd.DataFrame, methods: Sequence[str], level: int) -> list[Section]:
    """Task × method matrices: primary value (rank), then gain over the best expert (``level`` % CI)."""
    tasks = list(dict.fromkeys(ranks["task"]))
    by = ranks.set_index(["task", "method"])
    methods = [m for m in methods if m in set(ranks["method"])] + \
        [m for m in dict.fromkeys(ranks["method"]) if m not in methods]
    value, gain = pd.DataFrame({"task": tasks}), pd.DataFrame({"task": tasks})
    value["metric"] = [by.loc[t, "metric"].iloc[0] for t in tasks]
    gain["best expert"] = [by.loc[t, "reference"].dropna().iloc[0] if by.loc[t, "reference"].notna().any()
                           else MISSING for t in tasks]
    for m in methods:
        cells = [by.loc[(t, m)] if (t, m) in by.index else None for t in tasks]
        value[m] = [MISSING if c is None or pd.isna(c["value"]) else
                    bold(f"{c['value']:.3f} ({_rank(c['rank'])})", bool(c["is_first"])) for c in cells]
        gain[m] = [MISSING if c is None or pd.isna(c["gain"]) else
                   f"{signed_points(c['gain'])} [{signed_points(c['gain_ci_low'])}, "
                   f"{signed_points(c['gain_ci_high'])}]{_arrow(c['significance'])}" for c in cells]
    return [("Primary metric (rank); bold = first on the task", value),
            (f"Gain over the validation-selected best expert (points, paired {level}% CI; ↑/↓ significant)", gain)]


def _rank(rank: float) -> str:
    return "–" if pd.isna(rank) else (f"{rank:.0f}" if float(rank).is_integer() else f"{rank:.1f}")


def _arrow(significance: Any) -> str:
    if pd.isna(significance):
        return ""
    return {1: " ↑", -1: " ↓"}.get(int(significance), "")


def summary_view(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per method: wins, mean rank and mean gain over the tasks, each with its task count.

    The counts ("scored/tasks", "paired/tasks") keep a mean over few tasks from reading like one
    over all of them.
    """
    return pd.DataFrame({
        "method": summary["method"], "family": summary["family"],
        "first on": [w or MISSING for w in summary["wins_of"]],
        "mean rank": [f"{num(r, 2)} ({s}/{n})" if not pd.isna(r) else MISSING
                      for r, s, n in zip(summary["mean_rank"], summary["n_scored"], summary["n_tasks"], strict=True)],
        "mean gain (points)": [f"{signed_points(g)} ({p}/{n})" if not pd.isna(g) else MISSING
                               for g, p, n in zip(summary["mean_gain"], summary["n_paired"], summary["n_tasks"],
                                                  strict=True)],
        "mean gain (%)": [MISSING if pd.isna(g) else f"{g:+.1f}%" for g in summary["mean_gain_pct"]],
        "significant wins / losses": [f"{w} / {lo}" for w, lo in zip(summary["sig_wins"], summary["sig_losses"],
                                                                      strict=True)],
        "missing cells": summary["n_missing"],
        "external gain (points)": [MISSING if not n else f"{signed_points(g / 100)} ({n})" for g, n in
                                   zip(summary["external_mean_gain_points"], summary["external_n"], strict=True)],
    })


def cost_view(cost: pd.DataFrame) -> pd.DataFrame:
    """One row per method: training time and parameters, absolute and as ratios to the reference.

    A second time column adds the inner-fold experts that methods reading out-of-fold logits
    (logit-level learners with ``train_on: oof``) cannot be trained without, so their cost is not
    understated.
    """
    return pd.DataFrame({
        "method": cost["method"], "family": cost["family"],
        "tasks": [f"{n}" + (f" ({m} missing)" if m else "") for n, m in zip(cost["n_tasks"], cost["n_missing"],
                                                                            strict=True)],
        "training (total)": cost["train_seconds_total"].map(seconds),
        "incl. inner-fold experts": cost["total_seconds_incl_experts"].map(seconds),
        "per fold": cost["train_seconds_per_fold"].map(seconds),
        "parameters": cost["params_mean"].map(count),
        f"time vs {cost['reference'].iloc[0] if len(cost) else 'reference'}":
            cost["seconds_ratio"].map(ratio),
        "time vs reference, incl. experts": cost["seconds_ratio_incl_experts"].map(ratio),
        "parameters vs reference": cost["params_ratio"].map(ratio),
    })


def gate_sections(gates: pd.DataFrame) -> list[Section]:
    """One task × expert section per gated method: mean gate weight (± sd) on the test samples.

    The most trusted expert of a task is in bold; the KL from uniform and "gate moved?" tell apart
    a gate that learned something from one that stayed a uniform product of experts. A task without
    gate weights (status not ok) shows "—" for its diagnostics too, "folds kept epoch 0" included.
    """
    sections = []
    for method, rows in gates.groupby("method", sort=False):
        experts = list(dict.fromkeys(rows["expert"]))
        first = rows.drop_duplicates("task")  # the per-task diagnostics, one row per task in view order
        view = pd.DataFrame({"task": first["task"].to_list()})
        by = rows.set_index(["task", "expert"])
        for e in experts:
            cells = [by.loc[(t, e)] if (t, e) in by.index else None for t in view["task"]]
            top = [by.loc[t, "weight_mean"].max() for t in view["task"]]
            view[e] = [MISSING if c is None or pd.isna(c["weight_mean"]) else
                       bold(f"{c['weight_mean']:.2f} ± {c['weight_sd']:.2f}", c["weight_mean"] == mx)
                       for c, mx in zip(cells, top, strict=True)]
        view["KL from uniform"] = [num(v, 3) for v in first["kl_from_uniform"]]
        view["mean max weight"] = [num(v, 2) for v in first["max_weight"]]
        kept = zip(first["folds_kept_first_epoch"], first["status"], strict=True)
        view["folds kept epoch 0"] = [num(n, 0) if status == "ok" else MISSING for n, status in kept]
        view["gate moved?"] = [_gate_moved(kl) for kl in first["kl_from_uniform"]]
        sections.append((f"{method}: mean gate weight per expert (test samples; bold = most trusted)", view))
    return sections


def _gate_moved(kl: float) -> str:
    """The answer the KL shown beside it gives: NO below :data:`NEAR_UNIFORM_KL`, unknown without a KL."""
    if pd.isna(kl):
        return UNKNOWN
    return "NO: ≈ uniform product of experts" if kl < NEAR_UNIFORM_KL else "yes"


def missing_view(missing: pd.DataFrame) -> pd.DataFrame:
    """The missing benchmark cells with their reason, so that a blank cell is never unexplained."""
    return missing.rename(columns={"note": "why"})[["task", "method", "family", "why"]]


def _task_notes(task_facts: Mapping[str, str]) -> list[str]:
    """The tasks' facts as one note (the ranks table has no per-task headings to carry them)."""
    if not task_facts:
        return []
    return ["Task notes: " + " ".join(f"**{task}**: {fact}." for task, fact in task_facts.items())]


# ----------------------------------------------------------------------------- documents
def render_all(frames: Mapping[str, pd.DataFrame], missing: pd.DataFrame, meta: Mapping[str, Any]) -> dict[str, Doc]:
    """Markdown + HTML documents for the six tables."""
    stat = "mean over folds" if meta["rank_statistic"] == "mean" else "metric of the pooled test predictions"
    level = round(100 * float(meta["ci_level"]))
    n_missing, n_cells = meta["missing_cells"], meta["expected_cells"]
    missing_note = (f"**Missing cells: {n_missing} of {n_cells}** (task × method). Means are over the tasks a "
                    "method has; each mean says over how many.")
    selection = ("The reference of each task is, per fold, the single expert with the best validation score of the "
                 "primary metric (ties and undefined scores: lowest validation NLL, then config order) — the rule of "
                 "the best_val_expert baseline, whose gain is therefore 0. Never chosen on test labels.")
    summary = frames["summary"]
    docs = {
        "benchmark": document("Benchmark: every task × method × metric", [
            (f"Cells: mean ± sd over folds of the test split. Primary metric: the mean over folds with its {level}% "
             f"CI from a bootstrap that resamples test patients within each fold, stratified by class (survival: "
             f"event status), {meta['n_bootstrap']} resamples. POOLED (classification with several folds only) "
             "scores all folds' test predictions together — scores of different fold models on one scale — and is "
             "shown for reference, never used for gains. Bold: best mean in the column. A mean needs every fold; "
             "a fold where a metric is undefined (one class in its test set) is named and left out of the mean."),
            ("binary_f1: F1 of the positive class (the published code's f1_score default), beside macro F1. "
             "Section headings say which tasks carved validation out of train and why, and where the splits "
             "and CIs are per slide or per tile instead of per patient."), missing_note,
        ], benchmark_sections(frames["benchmark"], meta["primary_metric"], level, meta.get("task_facts"))),
        "ranks": document("Ranks on the primary metric", [
            (f"Ranked value: {stat}. Ties share the mean of their places; all tied winners are first. "
            f"Families ranked: {', '.join(meta['rank_families'])}."), selection,
            (f"Gains: mean over folds of (method − that fold's expert), in points (×100), with the {level}% CI of a "
             "paired bootstrap (the same stratified patient resamples for both, within each fold); ↑/↓ where "
             "the CI excludes 0 — uncorrected, per task (the Holm-corrected p-value is in the Parquet table)."),
            missing_note, *_task_notes(meta.get("task_facts") or {}),
        ], ranks_sections(frames["ranks"], meta["methods"], level)),
        "summary": document("Summary: who wins where, by how much", [
            "First on: tasks where the method has the best ranked value, out of the tasks it was run on.",
            selection,
            (f"Significant wins / losses: tasks whose paired gain is significant at {100 - level}% after a Holm "
             "correction across the method's tasks (the ranks table keeps the uncorrected per-task CIs)."),
            missing_note,
        ], [("", summary_view(summary)), ("Missing cells", missing_view(missing))]),
        "cost": document("Training cost of the fusion methods", [
            ("Training seconds and parameters from the fusion prediction files' metadata. 'training' is the "
             "method's own training; 'incl. inner-fold experts' adds the inner-fold expert trainings that only "
             "methods reading out-of-fold expert logits (logit-level learners with train_on: oof) require, "
             "split equally among those of the run (no double charging). The outer experts every method reads "
             "are not counted. Ratios use "
             f"only the (task, fold) units both methods have, on both bases; reference: {meta['cost_reference']}."),
        ], [("", cost_view(frames["cost"]))]),
        "gate_weights": document("Gate weights: which foundation model the gate trusts where", [
            "Mean ± sd over test samples of each expert's gate weight (survival: averaged over the T+1 bins).",
            ("Gate movement, mean over folds on the test samples: KL(w ‖ uniform) in nats (0 = never moved, log M = "
             "one expert) and the mean largest weight; 'folds kept epoch 0': early stopping kept the first epoch. "
             f"'NO' flags a task where the gate stayed uniform (KL < {NEAR_UNIFORM_KL}): LogitProd is then the "
             "uniform product of experts (the mean-logits baseline), not a learned fusion; 'unknown': the fusion "
             "run recorded no gate movement."),
        ], gate_sections(frames["gate_weights"]) or [("No gated fusion method in this run", pd.DataFrame())]),
        "left_out": document("Left out: samples no method was scored on, and why", [
            ("Every expert, fuser and score of a task uses one sample set: the slides (or tiles) that every "
             "encoder of the task has usable features for, that the label table labels and that a split uses. "
             "Each reason counts the slides (tiles, for tile tasks) it left out; the Parquet table lists every id."),
        ], [("", left_out_view(frames["left_out"]))] if len(frames["left_out"])
            else [("Nothing was left out", pd.DataFrame())]),
        "external": document("External cohorts: the trained models on another cohort, never refitted", [
            ("Each expert and fusion method of a task, as trained on the task's folds, predicts every sample of "
             "the external cohort; the value is that of the fold ensemble (the mean of the fold models' predictive "
             f"distributions) with its {level}% patient-level bootstrap CI. Gain: the ensemble minus "
             "best_val_expert on the cohort (each fold's validation-chosen expert, then the fold ensemble), "
             "paired bootstrap, ↑/↓ where the CI excludes 0. 'CV' repeats the cross-validation value of the "
             "ranks table for reading only: external rows are never pooled with it."),
        ], external_sections(frames["external"], level) or [("No labelled external cohort in this run",
                                                               pd.DataFrame())]),
    }
    return docs


def external_sections(table: pd.DataFrame, level: int) -> list[Section]:
    """One section per (task, cohort): each source's external value, CI, gain and CV value."""
    out = []
    for (task, cohort), part in table.groupby(["task", "cohort"], sort=False):
        view = pd.DataFrame({
            "method": part["method"], "family": part["family"],
            f"external {part['metric'].iloc[0]} [{level}% CI]": [
                MISSING if pd.isna(v) else f"{num(v, 3)} [{num(lo, 3)}, {num(hi, 3)}]"
                for v, lo, hi in zip(part["value"], part["ci_low"], part["ci_high"], strict=True)],
            "gain (points)": [MISSING if pd.isna(g) else signed_points(g) + _arrow(
                np.sign(g) if lo > 0 or hi < 0 else 0) for g, lo, hi in
                zip(part["gain"], part["gain_ci_low"], part["gain_ci_high"], strict=True)],
            "p": [MISSING if pd.isna(p) else f"{p:.3f}" for p in part["p_value"]],
            "CV": [MISSING if pd.isna(v) else num(v, 3) for v in part["cv_value"]],
            "note": part["note"].fillna(""),
        })
        out.append((f"{task} on {cohort} ({int(part['n_patients'].max())} patients)", view))
    return out

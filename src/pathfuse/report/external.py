"""The report's external results: every source on each labelled external cohort, beside its CV value.

One row per (task, cohort, source) on the task's primary metric, from
``metrics/external/{task}/{cohort}.parquet`` (:mod:`pathfuse.external.evaluate`): the fold
ensemble's value and patient-level CI on the cohort, its gain over ``best_val_expert`` applied to
the cohort (paired bootstrap CI, p-value), and — for reading only, never pooled with it — the
source's cross-validation value of the ranks table. ``split`` is "external" on every row.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pathfuse.config import Config
from pathfuse.evaluation.table import DELTA_PREFIX
from pathfuse.io import read_parquet, save_figure
from pathfuse.plan.external import external_cohorts
from pathfuse.report.plots import FONT

log = logging.getLogger(__name__)

COLUMNS = ["task", "cohort", "split", "method", "family", "metric", "value", "ci_low", "ci_high", "cv_value",
           "gain", "gain_ci_low", "gain_ci_high", "p_value", "reference", "n_patients", "status", "note"]


def load_external(cfg: Config) -> pd.DataFrame:
    """Every labelled external cohort's metrics rows (none when the run has no external cohort)."""
    frames = []
    for task, cohort, labelled in external_cohorts(cfg):
        path = cfg.layout.external_metrics(task, cohort)
        if labelled and path.exists():
            frames.append(read_parquet(path, schema="metrics")[0])
        elif labelled:
            log.warning("task %s, cohort %s: no external metrics %s", task, cohort, path)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def external_table(metrics: pd.DataFrame, ranks: pd.DataFrame, primary: dict[str, str]) -> pd.DataFrame:
    """One row per (task, cohort, source): the ensemble's primary metric on the cohort, its gain, its CV value."""
    if metrics.empty:
        return pd.DataFrame(columns=COLUMNS)
    ens = metrics[metrics["statistic"] == "ensemble"]
    rows = []
    cv = ranks.set_index(["task", "method"])["value"].to_dict() if len(ranks) else {}
    for (task, cohort, method), part in ens.groupby(["task", "cohort", "method"], sort=False):
        metric = primary[str(task)]
        value = part[part["metric"] == metric]
        delta = part[part["metric"] == DELTA_PREFIX + metric]
        first = value.iloc[0] if len(value) else part.iloc[0]
        gain = delta.iloc[0] if len(delta) else None
        rows.append({
            "task": task, "cohort": cohort, "split": "external", "method": method, "family": first["family"],
            "metric": metric, "value": first["value"], "ci_low": first["ci_low"], "ci_high": first["ci_high"],
            "cv_value": cv.get((task, method), np.nan),
            "gain": np.nan if gain is None else gain["value"],
            "gain_ci_low": np.nan if gain is None else gain["ci_low"],
            "gain_ci_high": np.nan if gain is None else gain["ci_high"],
            "p_value": np.nan if gain is None else gain["p_value"],
            "reference": None if gain is None else gain["reference"],
            "n_patients": int(first["n_patients"]), "status": first["status"], "note": first["note"]})
    return pd.DataFrame(rows, columns=COLUMNS)


def external_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per method: external cohorts scored and the mean external gain in points (joined onto the summary)."""
    if table.empty:
        return pd.DataFrame({"method": pd.Series(dtype=str), "external_n": pd.Series(dtype="int64"),
                             "external_mean_gain_points": pd.Series(dtype="float64")})
    g = table.groupby("method", sort=False)
    return pd.DataFrame({"external_n": g["value"].count(), "external_mean_gain_points": 100 * g["gain"].mean()}) \
        .reset_index()


def external_plot(table: pd.DataFrame, stem: Path) -> list[Path]:
    """Per (task, cohort): each source's CV value (hollow) and external value with its CI (filled)."""
    groups = list(table.groupby(["task", "cohort"], sort=False)) if len(table) else []
    fig = Figure(figsize=(7.5, 0.6 + 2.6 * max(len(groups), 1)), facecolor="white")
    if not groups:
        ax = fig.subplots()  # a framed panel: a tight crop of bare text would leave a sliver of an image
        ax.set_xticks([]), ax.set_yticks([])
        ax.text(0.5, 0.5, "no labelled external cohort in this run (task_data.<task>.external)",
                ha="center", va="center", fontsize=FONT, transform=ax.transAxes)
        return save_figure(fig, stem)
    axes = fig.subplots(len(groups), 1, squeeze=False)[:, 0]
    for ax, ((task, cohort), part) in zip(axes, groups, strict=True):
        x = np.arange(len(part))
        ok = part["value"].notna().to_numpy()
        ax.errorbar(x[ok], part["value"][ok], yerr=[(part["value"] - part["ci_low"])[ok],
                                                     (part["ci_high"] - part["value"])[ok]],
                    fmt="o", color="#1d6fa5", capsize=2, label=f"external ({cohort}), 95% CI")
        ax.plot(x, part["cv_value"], "o", mfc="none", color="#444444", label="cross-validation (mean over folds)")
        for i in np.flatnonzero(~ok):  # at the axis' foot, clear of the hollow CV point
            ax.text(i, 0.03, "missing", rotation=90, ha="center", va="bottom", fontsize=FONT - 2, color="#777777",
                    transform=ax.get_xaxis_transform())
        ax.set_xticks(x, part["method"], rotation=35, ha="right", fontsize=FONT - 1)
        ax.set_ylabel(part["metric"].iloc[0], fontsize=FONT)
        ax.set_title(f"{task} on external cohort {cohort}", fontsize=FONT + 1)
        ax.legend(fontsize=FONT - 2, loc="best")
    fig.tight_layout()
    return save_figure(fig, stem)

"""The report's benchmark figures (heatmap, gains; PNG + SVG), drawn for 22 tasks on one axis.

Also the figure helpers the fusion methods' figures (:mod:`pathfuse.report.fusion_plots`) share.

Figures are built with :class:`matplotlib.figure.Figure` (no pyplot, no global state, no GUI
backend), sized from the number of tasks and methods so that labels never overlap, and
grouped by task kind so the eye finds a task family at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from pathfuse.evaluation.metrics import HIGHER_IS_BETTER
from pathfuse.io import save_figure
from pathfuse.kinds import KINDS

FAMILY_COLORS = {"expert": "#4c566a", "baseline": "#8c6d31", "fuser": "#1d6fa5", "oracle": "#7b4f9d",
                 "unknown": "#888888"}
SIG_COLORS = {1: "#2a9d8f", 0: "#a3acb9", -1: "#e76f51"}
GAIN_PANEL_ORDER = ("fuser", "baseline", "oracle")
GAIN_PANELS_PER_ROW = 4
ROW_IN = 0.34  # inches per task row
FONT = 8.5


def figure(width: float, height: float) -> Figure:
    """A white, constrained-layout figure (no pyplot: no global state, no GUI backend)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    fig.set_facecolor("white")
    return fig


def task_axis(ax, tasks: Sequence[str], kinds: Sequence[str], labels: Sequence[str] | None = None) -> None:
    """Tasks top-to-bottom, with a line and a label between kinds."""
    ax.set_yticks(range(len(tasks)), labels or tasks, fontsize=FONT)
    ax.set_ylim(len(tasks) - 0.5, -0.5)
    for i in range(1, len(tasks)):
        if kinds[i] != kinds[i - 1]:
            ax.axhline(i - 0.5, color="#333333", lw=0.8)


def kind_labels(ax, kinds: Sequence[str], x: float) -> None:
    """Kind names beside each group of rows (axes-fraction x, data y)."""
    start = 0
    for i in range(1, len(kinds) + 1):
        if i == len(kinds) or kinds[i] != kinds[start]:
            ax.text(x, (start + i - 1) / 2, kind_label(kinds[start]),
                    transform=ax.get_yaxis_transform(), ha="left", va="center",
                    fontsize=FONT, color="#555555", style="italic")
            start = i


def kind_label(kind: str) -> str:
    """A task kind's name beside its rows: the kind's own ``label``, else its registry name."""
    return (KINDS.get(kind).label or kind) if kind in KINDS else kind


def placeholder(text: str, stem: Path) -> list[Path]:
    """A figure that says why there is nothing to draw (the report always writes every figure)."""
    fig = figure(6, 1.5)
    fig.text(0.5, 0.5, text, ha="center", va="center", fontsize=11, color="#555555")
    return save_figure(fig, stem)


def task_kinds(frame: pd.DataFrame, tasks: Sequence[str]) -> list[str]:
    """Each task's kind, in ``tasks`` order ("" where the frame does not say)."""
    kind_of = frame.dropna(subset=["kind"]).groupby("task")["kind"].first()
    return [kind_of.get(t, "") for t in tasks]


# ----------------------------------------------------------------------------- heatmap
def heatmap(ranks: pd.DataFrame, task_order: Sequence[str], method_order: Sequence[str], stem: Path,
            ranked_families: Sequence[str] = ("expert", "fuser", "baseline")) -> list[Path]:
    """Task × method matrix of the primary metric; colour scaled within each task; winner boxed.

    Only competing (ranked) methods set the colour scale; others (oracles) sit on grey.
    """
    tasks = [t for t in task_order if t in set(ranks["task"])]
    methods = [m for m in method_order if m in set(ranks["method"])] + \
        sorted(set(ranks["method"]) - set(method_order))
    if not tasks or not methods:
        return placeholder("no metrics to plot", stem)
    by = ranks.set_index(["task", "method"])
    values = np.array([[by["value"].get((t, m), np.nan) for m in methods] for t in tasks], dtype=float)
    first = np.array([[bool(by["is_first"].get((t, m), False)) for m in methods] for t in tasks])
    metric_of = ranks.groupby("task")["metric"].first()
    family_of = ranks.groupby("method")["family"].first()
    signs = np.array([1.0 if HIGHER_IS_BETTER[metric_of[t]] else -1.0 for t in tasks])[:, None]
    competing = np.array([family_of.get(m) in ranked_families for m in methods])
    scaled = _row_scale(np.where(competing[None, :], values * signs, np.nan))
    kinds = task_kinds(ranks, tasks)

    fig = figure(2.8 + 0.72 * len(methods), 1.6 + ROW_IN * len(tasks))
    ax = fig.add_subplot()
    cmap = _cmap()
    ax.imshow(np.ma.masked_invalid(scaled), cmap=cmap, vmin=0, vmax=1, aspect="auto")
    for i, j in np.ndindex(values.shape):
        if np.isnan(values[i, j]):
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="#f4f4f4", edgecolor="#c8c8c8",
                                   hatch="///", lw=0))
            ax.text(j, i, "missing", ha="center", va="center", fontsize=6.5, color="#888888")
            continue
        if not competing[j]:  # listed, not ranked (e.g. an oracle): neutral background
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="#ededed", edgecolor="none"))
        rgb = cmap(scaled[i, j]) if not np.isnan(scaled[i, j]) else (0.93, 0.93, 0.93)
        dark = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] < 0.5
        ax.text(j, i, f"{values[i, j]:.3f}", ha="center", va="center", fontsize=FONT - 0.5,
                color="white" if dark else "#1a1a1a", fontweight="bold" if first[i, j] else "normal")
        if first[i, j]:
            ax.add_patch(Rectangle((j - 0.46, i - 0.44), 0.92, 0.88, fill=False, edgecolor="#d1495b", lw=2.0))
    task_axis(ax, tasks, kinds, [f"{t}  ·  {metric_of[t]}" for t in tasks])
    kind_labels(ax, kinds, 1.01)
    ax.set_xticks(range(len(methods)), methods, rotation=40, ha="left", fontsize=FONT)
    ax.xaxis.tick_top()
    for label, m in zip(ax.get_xticklabels(), methods, strict=True):
        label.set_color(FAMILY_COLORS.get(family_of.get(m, "unknown"), "#333333"))
    for j in range(1, len(methods)):
        if family_of.get(methods[j]) != family_of.get(methods[j - 1]):
            ax.axvline(j - 0.5, color="#333333", lw=0.8)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    families = list(dict.fromkeys(family_of.get(m, "unknown") for m in methods))
    ax.legend(handles=[Patch(color=FAMILY_COLORS.get(f, "#888"), label=f) for f in families]
              + [Patch(facecolor="none", edgecolor="#d1495b", lw=2, label="first on the task"),
                 Patch(facecolor="#ededed", label="not ranked")],
              loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=len(families) + 2, fontsize=FONT, frameon=False)
    cbar = fig.colorbar(ax.images[0], ax=ax, fraction=0.025, pad=0.06, ticks=[0, 1])
    cbar.ax.set_yticklabels(["worst\non task", "best\non task"], fontsize=FONT - 1)
    ax.set_title("Primary metric per task and method (colour: scaled within each task)", fontsize=10, pad=12)
    return save_figure(fig, stem)


def _row_scale(signed: np.ndarray) -> np.ndarray:
    """Scale each row to [0, 1] (worst → best) so tasks with different metrics compare."""
    low, high = np.nanmin(np.where(np.isnan(signed), np.inf, signed), axis=1, keepdims=True), \
        np.nanmax(np.where(np.isnan(signed), -np.inf, signed), axis=1, keepdims=True)
    span = high - low
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(span > 0, (signed - low) / np.where(span > 0, span, 1), 0.5)


def _cmap():
    from matplotlib import colormaps

    return colormaps["YlGnBu"].resampled(256)


# ----------------------------------------------------------------------------- gains
def gains(ranks: pd.DataFrame, task_order: Sequence[str], method_order: Sequence[str], stem: Path) -> list[Path]:
    """One panel per fuser/baseline: gain over the best expert per task, bars with paired CI."""
    others = ranks[ranks["family"] != "expert"]
    methods = [m for m in method_order if m in set(others["method"])] + \
        sorted(set(others["method"]) - set(method_order))
    family_of = others.groupby("method")["family"].first()
    methods.sort(key=lambda m: GAIN_PANEL_ORDER.index(family_of[m]) if family_of[m] in GAIN_PANEL_ORDER else 9)
    tasks = [t for t in task_order if t in set(ranks["task"])]
    if not methods or not tasks:
        return placeholder("no fusion method to compare with the best expert", stem)
    kinds = task_kinds(ranks, tasks)
    by = others.set_index(["task", "method"])

    def points(col: str, method: str) -> np.ndarray:
        return np.array([100 * by[col].get((t, method), np.nan) for t in tasks], dtype=float)

    spans = [points(c, m) for m in methods for c in ("gain_ci_low", "gain_ci_high", "gain")]
    finite = np.concatenate([s[np.isfinite(s)] for s in spans]) if spans else np.array([])
    lim = max(1.0, float(np.abs(finite).max()) * 1.08) if finite.size else 1.0

    ncols = min(GAIN_PANELS_PER_ROW, len(methods))
    nrows = -(-len(methods) // ncols)
    fig = figure(2.6 + 2.6 * ncols, 0.9 + nrows * max(2.2, 0.9 + ROW_IN * len(tasks)))
    grid = fig.subplots(nrows, ncols, sharey=True, squeeze=False)
    axes = list(grid.flat)[: len(methods)]
    for ax in list(grid.flat)[len(methods):]:
        ax.set_visible(False)
    refs = by.reset_index().drop_duplicates("task").set_index("task")["reference"]
    labels = [f"{t}  (vs {refs[t]})" if isinstance(refs.get(t), str) else f"{t}  (no reference)" for t in tasks]
    for k, (ax, m) in enumerate(zip(axes, methods, strict=True)):
        gain, low, high = points("gain", m), points("gain_ci_low", m), points("gain_ci_high", m)
        sig = [0 if pd.isna(s) else int(s) for s in (by["significance"].get((t, m), pd.NA) for t in tasks)]
        colors = [SIG_COLORS[s] for s in sig]
        y = np.arange(len(tasks))
        ax.barh(y, np.nan_to_num(gain), color=colors, height=0.62)
        ok = np.isfinite(gain) & np.isfinite(low) & np.isfinite(high)
        ax.errorbar(gain[ok], y[ok], xerr=[gain[ok] - low[ok], high[ok] - gain[ok]], fmt="none",
                    ecolor="#222222", elinewidth=0.9, capsize=2)
        for i in np.flatnonzero(~np.isfinite(gain)):
            ax.text(0, i, " missing", va="center", ha="left", fontsize=6.5, color="#888888", style="italic")
        ax.axvline(0, color="#222222", lw=0.8)
        ax.set_xlim(-lim, lim)
        ax.grid(axis="x", color="#e5e5e5", lw=0.6)
        ax.set_axisbelow(True)
        n_up, n_down = sum(1 for s in sig if s == 1), sum(1 for s in sig if s == -1)
        mean = np.nanmean(gain) if np.isfinite(gain).any() else np.nan
        ax.set_title(f"{m}\nmean {mean:+.1f} pts · {n_up}↑ {n_down}↓", fontsize=9)
        ax.set_xlabel("gain (points)", fontsize=FONT)
        ax.tick_params(axis="x", labelsize=FONT - 0.5)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        task_axis(ax, tasks, kinds, labels)
        if k % ncols == ncols - 1:  # rightmost column only: labels elsewhere would widen a column
            kind_labels(ax, kinds, 1.02)
    fig.legend(handles=[Patch(color=SIG_COLORS[1], label="significantly better"),
                        Patch(color=SIG_COLORS[0], label="not significant"),
                        Patch(color=SIG_COLORS[-1], label="significantly worse")],
               loc="outside lower center", ncol=3, fontsize=FONT, frameon=False)
    fig.suptitle("Gain over the validation-selected best single expert (primary metric × 100, paired 95% CI)",
                 fontsize=10)
    return save_figure(fig, stem)

"""The fusion methods' figures (PNG + SVG).

How LogitProd's gate splits its trust, cost against gain (per fold, and on the whole run with the
Pareto front); drawn with the helpers of
:mod:`pathfuse.report.plots`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.colors import to_rgb
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from pathfuse.io import save_figure
from pathfuse.report import fusion_tables
from pathfuse.report.plots import (
    FAMILY_COLORS,
    FONT,
    ROW_IN,
    figure,
    kind_labels,
    placeholder,
    task_axis,
    task_kinds,
)


# ----------------------------------------------------------------------------- gate weights
def gate_weights(gates: pd.DataFrame, task_order: Sequence[str], stem: Path) -> list[Path]:
    """Stacked bars per task: how LogitProd's gate splits its trust among the experts."""
    if gates.empty:
        return placeholder("no gated fusion method (LogitProd) in this run", stem)
    methods = list(dict.fromkeys(gates["method"]))
    tasks = [t for t in task_order if t in set(gates["task"])]
    experts = list(dict.fromkeys(gates["expert"]))
    palette = _expert_palette(experts)
    kinds = task_kinds(gates, tasks)
    fig = figure(2.6 + 4.2 * len(methods), 1.7 + ROW_IN * len(tasks))
    axes = fig.subplots(1, len(methods), sharey=True, squeeze=False)[0]
    for ax, m in zip(axes, methods, strict=True):
        by = gates[gates["method"] == m].set_index(["task", "expert"])["weight_mean"]
        left = np.zeros(len(tasks))
        for e in experts:
            w = np.array([by.get((t, e), np.nan) for t in tasks], dtype=float)
            ax.barh(range(len(tasks)), np.nan_to_num(w), left=left, color=palette[e], height=0.7,
                    edgecolor="white", lw=0.6, label=e)
            for i in np.flatnonzero(np.nan_to_num(w) >= 0.12):
                rgb = to_rgb(palette[e])
                dark = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] < 0.55
                ax.text(left[i] + w[i] / 2, i, f"{w[i]:.2f}", ha="center", va="center", fontsize=6.5,
                        color="white" if dark else "#1a1a1a")
            left += np.nan_to_num(w)
        status = gates[gates["method"] == m].groupby("task")["status"].first()
        for i in np.flatnonzero(left == 0):
            label = "not applicable" if status.get(tasks[i]) == "not applicable" else "missing"
            ax.text(0.01, i, label, va="center", fontsize=6.5, color="#888888", style="italic")
        ax.set_xlim(0, 1)
        ax.set_xlabel("mean gate weight (test samples)", fontsize=FONT)
        ax.set_title(m, fontsize=9)
        ax.tick_params(axis="x", labelsize=FONT - 0.5)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    task_axis(axes[0], tasks, kinds)
    kind_labels(axes[-1], kinds, 1.02)
    fig.legend(handles=[Patch(color=palette[e], label=e) for e in experts], loc="outside lower center",
               ncol=min(len(experts), 6), fontsize=FONT, frameon=False, title="expert", title_fontsize=FONT)
    fig.suptitle("Which foundation model the gate trusts, per task", fontsize=10)
    return save_figure(fig, stem)


def _label_offsets(x: np.ndarray, y: np.ndarray, y_span: float) -> list[float]:
    """Vertical label offsets (points) that keep labels of nearby markers (log x, linear y) from overlapping."""
    placed: list[tuple[float, float]] = []  # (log10 x, label y in points-ish units)
    offsets = [0.0] * len(x)
    for i in np.argsort(-y):
        xi, yi = float(np.log10(x[i])), float(y[i]) / y_span * 300  # ~300 pt of axis height
        dy = 0.0
        while any(abs(xi - px) < 0.9 and abs(yi + dy - py) < 11 for px, py in placed):
            dy -= 11
        placed.append((xi, yi + dy))
        offsets[i] = dy
    return offsets


def _expert_palette(experts: Sequence[str]) -> dict[str, str]:
    base = ["#264653", "#2a9d8f", "#e9c46a", "#f4a261", "#e76f51", "#8ab17d", "#6d597a", "#b56576",
            "#457b9d", "#a8dadc"]
    return {e: base[i % len(base)] for i, e in enumerate(experts)}


# ----------------------------------------------------------------------------- cost
def cost(cost_table: pd.DataFrame, summary: pd.DataFrame, reference: str, stem: Path) -> list[Path]:
    """Training time per fold (log) against mean gain over the best expert, one point per method."""
    data = cost_table.merge(summary[["method", "mean_gain_points", "n_paired", "n_tasks"]], on="method", how="left")
    data = data[np.isfinite(data["train_seconds_per_fold"].astype(float))
                & np.isfinite(data["mean_gain_points"].astype(float))]
    if data.empty:
        return placeholder("no fusion method with both cost and gain to plot", stem)
    fig = figure(6.8, 4.6)
    ax = fig.add_subplot()
    params = data["params_mean"].astype(float).fillna(0)
    size = (40 + 360 * np.sqrt((params / params.max()).to_numpy()) if params.max() > 0
            else np.full(len(data), 80.0))
    colors = [FAMILY_COLORS.get(f, "#888") for f in data["family"]]
    ax.scatter(data["train_seconds_per_fold"], data["mean_gain_points"], s=size, c=colors, alpha=0.85,
               edgecolor="white", lw=1.2, zorder=3)
    y_span = max(float(np.ptp(data["mean_gain_points"])), 1.0)
    points = zip(data["method"], data["seconds_ratio"], data["train_seconds_per_fold"], data["mean_gain_points"],
                 _label_offsets(data["train_seconds_per_fold"].to_numpy(dtype=float),
                                data["mean_gain_points"].to_numpy(dtype=float), y_span), size, strict=True)
    for method, seconds_ratio, x, y, dy, area in points:
        ratio = "" if pd.isna(seconds_ratio) or method == reference else f"  ×{seconds_ratio:.2g}"
        ax.annotate(f"{method}{ratio}", (x, y),
                    xytext=(3 + np.sqrt(area) / 2, dy), textcoords="offset points", va="center", fontsize=FONT,
                    zorder=4)
    ax.axhline(0, color="#222222", lw=0.8, ls="--")
    ax.set_xscale("log")
    lo, hi = data["train_seconds_per_fold"].min(), data["train_seconds_per_fold"].max()
    ax.set_xlim(lo / 2.5, hi * 6)
    ax.set_ylim(min(0.0, data["mean_gain_points"].min()) - 0.12 * y_span,
                max(0.0, data["mean_gain_points"].max()) + 0.12 * y_span)
    ax.set_xlabel(f"training time per fold (s, log scale); ×r = r times {reference}'s time", fontsize=FONT + 0.5)
    ax.set_ylabel("mean gain over best expert (points)", fontsize=FONT + 0.5)
    ax.grid(color="#ececec", lw=0.6)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    families = list(dict.fromkeys(data["family"]))
    ax.legend(handles=[Patch(color=FAMILY_COLORS.get(f, "#888"), label=f) for f in families]
              + [Line2D([], [], color="#222222", lw=0.8, ls="--", label="best single expert")],
              fontsize=FONT, frameon=False, loc="best", title="marker area ∝ √parameters", title_fontsize=FONT - 1)
    ax.set_title("Cost vs performance of the fusion methods", fontsize=10)
    return save_figure(fig, stem)


# ----------------------------------------------------------------------------- cost against gain, Pareto front
def cost_gain(cost_table: pd.DataFrame, ranks: pd.DataFrame, outer_seconds: float, ci_level: float,
              stem: Path) -> list[Path]:
    """Every method's cost on its own (log) against its mean gain over the best expert (CI across tasks); Pareto front.

    x: the method's training seconds plus the inner-fold experts it read (summed over tasks and
    folds); the outer experts, which every method reads, are one shared cost drawn as a vertical
    reference line. Methods on the front (no other is both cheaper and better) are ringed and joined.
    """
    data = fusion_tables.cost_gain_points(cost_table, ranks, ci_level)
    if data.empty:
        return placeholder("no fusion method with both cost and gain to plot", stem)
    floor = 1e-3  # untrained baselines take microseconds: drawn at 1 ms, the axis says so
    x = np.maximum(data["seconds"].to_numpy(dtype=float), floor)
    y = data["gain_points"].to_numpy(dtype=float)
    fig = figure(7.2, 4.8)
    ax = fig.add_subplot()
    low, high = data["ci_low"].to_numpy(dtype=float), data["ci_high"].to_numpy(dtype=float)
    ok = np.isfinite(low) & np.isfinite(high)
    ax.errorbar(x[ok], y[ok], yerr=[y[ok] - low[ok], high[ok] - y[ok]], fmt="none", ecolor="#9a9a9a",
                elinewidth=1.0, capsize=2.5, zorder=2)
    colors = [FAMILY_COLORS.get(f, "#888") for f in data["family"]]
    ax.scatter(x, y, s=60, c=colors, edgecolor="white", lw=1.0, zorder=4)
    front = data["pareto"].to_numpy(dtype=bool)
    order = np.argsort(x[front])
    ax.step(x[front][order], y[front][order], where="post", color="#d1495b", lw=1.2, zorder=3)
    ax.scatter(x[front], y[front], s=170, facecolor="none", edgecolor="#d1495b", lw=1.4, zorder=5)
    y_span = max(float(np.nanmax(high[ok]) - np.nanmin(low[ok])) if ok.any() else float(np.ptp(y)), 1.0)
    for method, xi, yi, dy in zip(data["method"], x, y, _label_offsets(x, y, y_span), strict=True):
        ax.annotate(method, (xi, yi), xytext=(7, dy), textcoords="offset points", va="center", fontsize=FONT - 0.5,
                    zorder=6, arrowprops={"arrowstyle": "-", "color": "#bbbbbb", "lw": 0.5} if dy else None)
    ax.axhline(0, color="#222222", lw=0.8, ls="--")
    if outer_seconds > 0:
        ax.axvline(outer_seconds, color="#4c566a", lw=1.0, ls=":")
        ax.annotate(f"outer experts, shared\nby every method: {outer_seconds:.3g} s", (outer_seconds, 1.0),
                    xycoords=("data", "axes fraction"), xytext=(-4, -4), textcoords="offset points",
                    ha="right", va="top", fontsize=FONT - 0.5, color="#4c566a")
    ax.set_xscale("log")
    ax.set_xlim(min(x.min(), outer_seconds or x.min()) / 3, max(x.max(), outer_seconds) * 8)
    ax.set_xlabel("training seconds of the whole run: the method + the inner-fold experts it needs (log; "
                  f"≤ {floor * 1000:.0f} ms drawn at {floor * 1000:.0f} ms)", fontsize=FONT)
    ax.set_ylabel(f"mean gain over best expert (points, {ci_level:.0%} CI across tasks)", fontsize=FONT)
    ax.grid(color="#ececec", lw=0.6)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    families = list(dict.fromkeys(data["family"]))
    ax.legend(handles=[Patch(color=FAMILY_COLORS.get(f, "#888"), label=f) for f in families]
              + [Line2D([], [], color="#d1495b", lw=1.2, marker="o", mfc="none", label="Pareto front"),
                 Line2D([], [], color="#222222", lw=0.8, ls="--", label="best single expert")],
              fontsize=FONT, frameon=False, loc="best")
    ax.set_title("What each method costs on its own against what it gains", fontsize=10)
    return save_figure(fig, stem)

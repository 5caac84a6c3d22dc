"""The experts' training curves, one figure per task, drawn by the report.

The expert jobs only write their curves as data (``training_curve.parquet``): plotting there
cost each of the run's (task, encoder) jobs a matplotlib import, and one picture per task with
every encoder side by side is what a person compares anyway (which encoder over-fits, which
one's validation loss never moves).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from pathfuse.io import save_figure
from pathfuse.report.plots import FONT

PANEL_IN = (2.6, 1.9)  # width, height of one encoder's panel in inches


def training_curves(task: str, curves: Mapping[str, pd.DataFrame | None], stem: Path) -> list[Path]:
    """Train (solid) and validation (dashed) loss per outer fold, one panel per encoder.

    Args:
        task: the task id, the figure's title.
        curves: encoder → its ``training_curve`` table, or None where the expert has none
            (the panel then says so instead of silently disappearing).
        stem: output path without suffix; a PNG is written.
    """
    encoders = list(curves)
    # Fixed margins instead of the constrained layout of the other figures: a run draws one of
    # these per task, and the layout solver made each take 60% longer.
    fig = Figure(figsize=(PANEL_IN[0] * max(len(encoders), 1), PANEL_IN[1] + 0.4), facecolor="white")
    axes = fig.subplots(1, max(len(encoders), 1), sharey=True, squeeze=False)[0]
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.2, top=0.8, wspace=0.08)
    for ax, encoder in zip(axes, encoders, strict=False):
        ax.set_title(encoder, fontsize=FONT)
        ax.tick_params(labelsize=FONT - 1)
        curve = curves[encoder]
        if curve is None or curve.empty:
            ax.text(0.5, 0.5, "no curve", transform=ax.transAxes, ha="center", va="center", color="#888888")
            continue
        outer = curve[curve["model"] == "outer"]
        for fold, part in outer.groupby("fold"):
            line = ax.plot(part["epoch"], part["train_loss"], lw=1, label=f"fold {fold}")[0]
            ax.plot(part["epoch"], part["val_loss"], lw=1, ls="--", color=line.get_color())
        ax.set_xlabel("epoch", fontsize=FONT)
        ax.grid(color="#ececec", lw=0.6)
    axes[0].set_ylabel("loss (solid train, dashed val)", fontsize=FONT)
    drawn = [ax for ax in axes if ax.get_lines()]
    if drawn:
        drawn[0].legend(fontsize=FONT - 1.5, frameon=False, loc="best")
    fig.suptitle(f"{task}: expert training curves (outer models)", fontsize=FONT + 1)
    return save_figure(fig, stem, formats=("png",))

"""Where each FM looks, and whom the gate trusted here: one figure per task in the report.

Slide tasks: one row per picked test slide (:mod:`pathfuse.report.attention_data` says which),
one panel per expert with its attention over the slide thumbnail, and the gate's weights for
that sample as bars. Attention is coloured by its rank within the slide (viridis, colour-blind
safe), so the colours mean the same for every expert and bag size. Tile tasks: one row per
picked test tile with its image, every expert's prediction, the fused one and the gate's
weights. Whatever cannot be drawn (no thumbnail, no coordinates, no gated method, no attention
file) is said in the panel, never silently left blank.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from pathfuse.attention import rank_normalise
from pathfuse.config import Config
from pathfuse.io import save_figure
from pathfuse.report.attention_data import (
    THUMBNAIL_PX,
    Pick,
    RowSource,
    TaskView,
    slide_attention,
    slide_paths,
    task_view,
    thumbnail,
    tile_images,
    tile_side,
)
from pathfuse.report.plots import FONT

N_SLIDES = 3  # rows of a slide task's figure
N_TILES = 6  # rows of a tile task's figure
CMAP = colormaps["viridis"]
PANEL_IN = 1.9  # inches per panel: a 3-expert figure is ~800 px wide at DPI
DPI = 100  # the thumbnails make these the report's heaviest pictures: ~150-250 KB each at 100 dpi
GATE_COLOR = "#1d6fa5"
MUTED = "#777777"


def attention_figure(cfg: Config, task_id: str, stem: Path, source: RowSource | None = None,
                     n_slides: int = N_SLIDES) -> list[Path]:
    """Draw ``task_id``'s figure to ``stem.png`` (always written; missing pieces are said in it).

    ``source`` None: the outer folds' test samples (the report); a :class:`RowSource` with a cohort:
    that cohort's fold-ensemble predictions (external cohorts, ``pathfuse predict``).
    """
    task = cfg.task(task_id)
    view = task_view(cfg, task_id, n_slides if task.is_slide_task else N_TILES, source)
    # Slide tasks: one attention panel per expert + the gate; tile tasks: image, predictions, gate.
    ratios = [1.0] * len(view.encoders) + [0.8] if task.is_slide_task else [1.0, 1.3, 1.0]
    n_rows = max(len(view.picks), 1)
    row_in = PANEL_IN if task.is_slide_task else 0.7 * PANEL_IN
    fig = Figure(figsize=(PANEL_IN * max(sum(ratios), 3) + 0.6, row_in * n_rows + 1.0), facecolor="white")
    if not view.picks:
        fig.text(0.5, 0.5, f"{task_id}: nothing to draw ({'; '.join(view.notes) or 'no test samples'})",
                 ha="center", va="center", fontsize=FONT + 1, color=MUTED)
        return save_figure(fig, stem, formats=("png",), dpi=DPI)
    axes = fig.subplots(n_rows, len(ratios), squeeze=False, gridspec_kw={"width_ratios": ratios})
    fig.subplots_adjust(left=0.03, right=0.9, top=1 - 0.75 / fig.get_figheight(), bottom=0.55 / fig.get_figheight(),
                        wspace=0.12, hspace=0.55)
    if task.is_slide_task:
        _slide_rows(cfg, view, axes)
        bar = fig.add_axes((0.15, 0.18 / fig.get_figheight(), 0.45, 0.1 / fig.get_figheight()))
        fig.colorbar(ScalarMappable(Normalize(0, 1), CMAP), cax=bar, orientation="horizontal").set_label(
            "attention rank within the slide (0 = least, 1 = most attended tile)", fontsize=FONT - 1)
        what = "where each expert looks (ABMIL attention, rank within slide)"
    else:
        _tile_rows(cfg, view, axes)
        what = "test tiles where the experts disagree most"
    if view.source.cohort is not None:
        what += f"; cohort {view.source.cohort}, fold ensemble"
    gate = f"gate weights: {view.gate_method}" if view.gate_method else "no gated fusion method in this run"
    fig.suptitle(f"{task_id} — {what}; {gate}", fontsize=FONT + 1)
    return save_figure(fig, stem, formats=("png",), dpi=DPI)


def _row_title(pick: Pick) -> str:
    fused = f"fused: {pick.fused_text}" if pick.fused_text else "fused: —"
    fold = f"fold {pick.fold}" if pick.fold >= 0 else "fold ensemble"
    return f"{pick.sample_id} ({fold})  truth: {pick.truth}  {fused}  disagreement {pick.disagreement:.2f}"


def _gate_bars(ax: Axes, encoders: list[str], gate: np.ndarray | None) -> None:
    """The gate's weight per expert for this sample (1/M line: the uniform start)."""
    if gate is None:
        _say(ax, "no gate weights\nfor this sample")
        return
    ax.barh(range(len(encoders)), gate, color=GATE_COLOR)
    ax.axvline(1 / len(encoders), color=MUTED, lw=0.8, ls=":")
    ax.set_yticks(range(len(encoders)), encoders, fontsize=FONT - 1.5)
    ax.yaxis.tick_right()
    ax.set_ylim(len(encoders) - 0.5, -0.5)
    ax.set_xlim(0, 1)
    ax.tick_params(axis="x", labelsize=FONT - 2)
    ax.set_title("gate weight", fontsize=FONT - 1)


def _say(ax: Axes, text: str) -> None:
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=FONT - 1.5, color=MUTED,
            wrap=True)


def _slide_rows(cfg: Config, view: TaskView, axes: np.ndarray) -> None:
    layers = slide_attention(cfg, view.task.id, view.encoders, view.picks, view.source)
    paths = slide_paths(cfg, view.source.cohort or view.task.cohort or "")
    for row, pick in zip(axes, view.picks, strict=False):
        found = {e: layers[e].get((pick.fold, pick.sample_id)) for e in view.encoders}
        present = [f for f in found.values() if f is not None and len(f)]
        # A patient bag may hold several slides: show its largest one (the most tiles to look at).
        slide = present[0]["slide_id"].value_counts().idxmax() if present else None
        image, dims, why = thumbnail(paths.get(slide)) if slide else (None, None, "")
        shown = f"  slide {slide}" if slide and slide != pick.sample_id else ""
        row[0].text(0, 1.28, _row_title(pick) + shown, transform=row[0].transAxes,
                    fontsize=FONT - 1, ha="left", va="bottom")
        for ax, encoder in zip(row[:-1], view.encoders, strict=True):
            ax.set_title(f"{encoder}: {pick.expert_text[encoder]}", fontsize=FONT - 1)
            tiles = found[encoder]
            if tiles is None or not len(tiles):
                _say(ax, "no attention recorded\n(re-run the expert)")
                continue
            tiles = tiles[tiles["slide_id"] == slide]
            _overlay(ax, image, dims, tiles, why)
        _gate_bars(row[-1], view.encoders, pick.gate)


def _overlay(ax: Axes, image: np.ndarray | None, dims: tuple[int, int] | None, tiles, why: str) -> None:
    """Attention ranks as tile squares over the thumbnail (or over a blank canvas of the tile grid)."""
    ax.set_xticks([])
    ax.set_yticks([])
    rank = rank_normalise(tiles["attention"].to_numpy())
    if tiles["x"].isna().any():
        _say(ax, f"bag imported without tile\ncoordinates: attention of\n{len(tiles)} tiles cannot be placed")
        return
    xy = tiles[["x", "y"]].to_numpy(dtype=np.float64)
    side = tile_side(xy)
    width, height = dims if dims else (xy[:, 0].max() + side, xy[:, 1].max() + side)
    if image is not None:
        ax.imshow(image, extent=(0, width, height, 0), interpolation="antialiased")
    else:
        ax.set_facecolor("#f2f2f2")
        ax.set_xlabel(why or "no thumbnail", fontsize=FONT - 2.5, color=MUTED)
    scale = min(THUMBNAIL_PX / max(width, height), 1.0)  # overlay raster at the thumbnail's resolution
    grid = np.full((max(int(height * scale), 1), max(int(width * scale), 1)), np.nan)
    for (x, y), r in zip(xy, rank, strict=True):
        x0, y0 = int(x * scale), int(y * scale)
        x1, y1 = max(int((x + side) * scale), x0 + 1), max(int((y + side) * scale), y0 + 1)
        cell = grid[y0:y1, x0:x1]
        grid[y0:y1, x0:x1] = np.fmax(cell, r)  # overlapping tiles: the higher rank shows
    ax.imshow(np.ma.masked_invalid(grid), cmap=CMAP, vmin=0, vmax=1, alpha=0.6, extent=(0, width, height, 0),
              interpolation="nearest")
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_aspect("equal")


def _tile_rows(cfg: Config, view: TaskView, axes: np.ndarray) -> None:
    images = tile_images(cfg, view.task.dataset or "", [p.sample_id for p in view.picks])
    for row, pick in zip(axes, view.picks, strict=False):
        image = images.get(pick.sample_id)
        if image is None:
            _say(row[0], "no image\n(features-only dataset)")
        else:
            row[0].imshow(image)
            row[0].set_xticks([])
            row[0].set_yticks([])
        row[0].set_title(pick.sample_id, fontsize=FONT - 2)
        lines = [f"truth: {pick.truth}", *(f"{e}: {t}" for e, t in pick.expert_text.items()),
                 f"fused: {pick.fused_text or '—'}", f"disagreement {pick.disagreement:.2f}"]
        row[1].set_axis_off()
        row[1].text(0, 0.5, "\n".join(lines), transform=row[1].transAxes, fontsize=FONT - 1, va="center",
                    ha="left", family="monospace")
        _gate_bars(row[-1], view.encoders, pick.gate)

"""What the attention figures show: which test samples, each expert's and the gate's view of them.

The rule that picks the samples (documented in workflow/report/plot_attention.rst): among the
test samples of every outer fold that each expert predicted, the ``N`` where the experts
**disagree most** — the mean over expert pairs of the total-variation distance between their
class distributions (survival: the mean absolute gap between their survival curves over the
time bins); ties by sample id. Those are the samples where it matters whom the gate trusts.

Everything here reads files (predictions, attention tables, the tile index, slides, tile
images) and returns plain arrays; the drawing is in :mod:`pathfuse.report.attention`.
Nothing imports torch: the report's environment has none.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pathfuse.attention import read_attention
from pathfuse.config import Config, TaskSpec
from pathfuse.io import read_parquet
from pathfuse.kinds import TaskKind

log = logging.getLogger(__name__)

THUMBNAIL_PX = 256  # long side of a slide thumbnail: ~1.3x a panel's pixels, so drawing needs no heavy resampling


@dataclass
class Pick:
    """One test sample of the figure: truth, each expert's and the fused prediction, gate weights."""

    fold: int
    sample_id: str
    truth: str
    disagreement: float
    expert_text: dict[str, str]
    fused_text: str | None
    gate: np.ndarray | None  # [M] mean weight per expert (survival: averaged over the time bins)


@dataclass(frozen=True)
class RowSource:
    """Which rows a figure draws: the cross-validation's test rows, or a cohort predicted by the trained models.

    ``cohort`` None: each outer fold's test rows (the report). A cohort name: the fold-ensemble
    rows (fold −1) of ``results/external/{task}/{cohort}/`` (external cohorts, ``pathfuse predict``),
    whose attention is the mean over the fold models.
    """

    cohort: str | None = None

    def predictions(self, cfg: Config, task_id: str, source: str, expert: bool) -> Path:
        """The predictions file of one expert (``expert``) or fusion method."""
        if self.cohort is not None:
            return cfg.layout.external_predictions(task_id, self.cohort, source)
        return (cfg.layout.expert_predictions if expert else cfg.layout.fusion_predictions)(task_id, source)

    def attention(self, cfg: Config, task_id: str, encoder: str) -> Path:
        """One expert's attention table."""
        if self.cohort is not None:
            return cfg.layout.external_attention(task_id, self.cohort, encoder)
        return cfg.layout.expert_attention(task_id, encoder)

    def rows(self, path: Path) -> pd.DataFrame:
        """The drawn rows of a predictions file, indexed by (fold, sample_id)."""
        df, _ = read_parquet(path, schema="predictions",
                             columns=["fold", "split", "oof", "sample_id", "label", "time", "event", "logits",
                                      "gate_weights"])
        keep = (df["split"] == "test") & ~df["oof"].astype(bool) if self.cohort is None else df["fold"] == -1
        return df[keep].set_index(["fold", "sample_id"])


@dataclass
class TaskView:
    """The picks of one task, and which gated method (if any) the bars come from."""

    task: TaskSpec
    encoders: list[str]
    picks: list[Pick]
    gate_method: str | None
    notes: list[str] = field(default_factory=list)
    source: RowSource = field(default_factory=RowSource)


def distributions(kind: TaskKind, logits: np.ndarray) -> np.ndarray:
    """The predicted distributions of ``logits`` [..., K], in the form experts can be compared in.

    Class probabilities, or for time-to-event kinds the survival curves S(t) over the time bins
    (from the per-bin hazards), since hazards of different bins are not comparable one by one.
    """
    scores = kind.row_scores(logits.reshape(-1, logits.shape[-1])).reshape(logits.shape)
    return np.cumprod(1.0 - scores, axis=-1) if kind.time_to_event else scores


def disagreement(kind: TaskKind, dists: np.ndarray) -> np.ndarray:
    """How much the experts disagree on each sample: [N] mean distance over expert pairs.

    ``dists`` [M, N, K] are the M experts' distributions; the distance is the total variation for
    class distributions and the mean absolute gap for survival curves.
    """
    pairs = list(combinations(range(len(dists)), 2))
    if not pairs:
        return np.zeros(dists.shape[1])
    gap = [np.abs(dists[i] - dists[j]).mean(-1) if kind.time_to_event else 0.5 * np.abs(dists[i] - dists[j]).sum(-1)
           for i, j in pairs]
    return np.mean(gap, axis=0)


def _describe(kind: TaskKind, dist: np.ndarray, classes: list[str]) -> str:
    if kind.time_to_event:
        return f"risk {1.0 - dist[-1]:.2f}"  # P(event by the last bin's end)
    k = int(np.argmax(dist))
    return f"{classes[k]} {dist[k]:.2f}"


def task_view(cfg: Config, task_id: str, n: int, source: RowSource | None = None) -> TaskView:
    """Pick the ``n`` test samples of ``task_id`` where its experts disagree most (module docstring)."""
    source = source or RowSource()
    task = cfg.task(task_id)
    kind = task.kind_strategy
    classes = list(task.display_classes) if kind.has_classes else []
    view = TaskView(task, [], [], None, source=source)
    rows = {}
    for encoder in task.encoders:
        path = source.predictions(cfg, task_id, encoder, expert=True)
        if path.exists():
            rows[encoder] = source.rows(path)
        else:
            view.notes.append(f"{encoder}: no predictions")
    view.encoders = list(rows)
    if not rows:
        return view
    keys = sorted(set.intersection(*(set(r.index) for r in rows.values())), key=lambda k: (k[0], str(k[1])))
    if not keys:
        view.notes.append("the experts share no test sample")
        return view
    dists = np.stack([distributions(kind, np.stack(rows[e].loc[keys, "logits"].to_numpy()))
                      for e in view.encoders])
    score = disagreement(kind, dists)
    order = sorted(range(len(keys)), key=lambda i: (-score[i], str(keys[i][1])))[:n]
    gated, view.gate_method = _gated_rows(cfg, task_id, source)
    first = rows[view.encoders[0]]
    for i in order:
        fold, sample = keys[i]
        truth_row = first.loc[(fold, sample)]
        truth = _truth(kind, truth_row, classes)
        fused_text, gate = None, None
        if gated is not None and (fold, sample) in gated.index:
            row = gated.loc[(fold, sample)]
            fused_text = _describe(kind, distributions(kind, np.asarray(row["logits"], dtype=np.float64)), classes)
            gate = np.asarray(row["gate_weights"], dtype=np.float64).reshape(-1, len(view.encoders)).mean(0)
        view.picks.append(Pick(int(fold), str(sample), truth, float(score[i]),
                               {e: _describe(kind, dists[m, i], classes) for m, e in enumerate(view.encoders)},
                               fused_text, gate))
    return view


def _truth(kind: TaskKind, row: pd.Series, classes: list[str]) -> str:
    """The sample's label as the figure states it ("unlabelled" for new slides)."""
    if kind.time_to_event:
        return "unlabelled" if np.isnan(row["time"]) else \
            f"time {row['time']:.3g}, {'event' if row['event'] == 1 else 'censored'}"
    return classes[int(row["label"])] if int(row["label"]) >= 0 else "unlabelled"


def _gated_rows(cfg: Config, task_id: str, source: RowSource) -> tuple[pd.DataFrame | None, str | None]:
    """Drawn rows of the run's first fusion method that records gate weights (LogitProd), if any."""
    for method in cfg.fusion_methods:
        path = source.predictions(cfg, task_id, method, expert=False)
        if not path.exists():
            continue
        rows = source.rows(path)
        if rows["gate_weights"].notna().any():
            return rows[rows["gate_weights"].notna()], method
    return None, None


# ----------------------------------------------------------------------------- slide tasks
@dataclass
class SlideLayer:
    """One expert's attention on one slide: level-0 tile positions and within-slide ranks."""

    xy: np.ndarray | None  # [n, 2] level-0 top-left, None when the bag has no coordinates
    rank: np.ndarray  # [n] in [0, 1]


def slide_attention(cfg: Config, task_id: str, encoders: list[str], picks: list[Pick],
                    source: RowSource | None = None) -> dict[str, dict]:
    """Attention rows of the picked samples, per encoder and (fold, sample).

    Returns:
        encoder → (fold, sample_id) → its attention rows; {} for an encoder without recorded attention.
    """
    out: dict[str, dict] = {}
    for encoder in encoders:
        path = (source or RowSource()).attention(cfg, task_id, encoder)
        if not path.exists():
            out[encoder] = {}
            continue
        frame = read_attention(path, [p.sample_id for p in picks])
        # Not dict(groupby): dict() would take GroupBy for a mapping and call its ``keys`` attribute.
        out[encoder] = {key: part for key, part in frame.groupby(["fold", "sample_id"])}  # noqa: C416
    return out


def slide_paths(cfg: Config, cohort: str) -> dict[str, str]:
    """Slide file of each slide id, from the cohort's tile index ({} for features-only cohorts)."""
    path = cfg.layout.tile_index(cohort)
    if not path.exists():
        return {}
    index, _ = read_parquet(path, schema="tile_index", columns=["slide_id", "path"])
    return dict(zip(index["slide_id"].astype(str), index["path"].astype(str), strict=True))


def thumbnail(path: str | None) -> tuple[np.ndarray | None, tuple[int, int] | None, str]:
    """(RGB thumbnail ≤ THUMBNAIL_PX on its long side, level-0 size, why not) of a slide file."""
    if not path:
        return None, None, "no slide file (features-only cohort)"
    import openslide

    try:
        with openslide.OpenSlide(path) as slide:
            image = slide.get_thumbnail((THUMBNAIL_PX, THUMBNAIL_PX)).convert("RGB")
            return np.asarray(image), slide.dimensions, ""
    except (openslide.OpenSlideError, OSError) as err:
        log.warning("no thumbnail of %s: %s", path, err)
        return None, None, f"slide not readable ({type(err).__name__})"


def tile_side(xy: np.ndarray) -> float:
    """The grid's stride in level-0 px (smallest positive step between tile x or y), the drawn tile size."""
    steps = np.concatenate([np.diff(np.unique(xy[:, 0])), np.diff(np.unique(xy[:, 1]))])
    steps = steps[steps > 0]
    return float(steps.min()) if len(steps) else 256.0


# ----------------------------------------------------------------------------- tile tasks
def tile_images(cfg: Config, dataset: str, sample_ids: list[str]) -> dict[str, np.ndarray]:
    """The images of some tiles of a tile dataset (none for feature-only datasets or unreadable files)."""
    from pathfuse.encoders.tile_sources import list_samples, read_image

    if cfg.tile_dataset(dataset).format == "features":
        return {}
    listing = list_samples(cfg, dataset).set_index("sample_id")
    out: dict[str, np.ndarray] = {}
    open_h5: dict[str, Any] = {}
    for sample in (s for s in sample_ids if s in listing.index):
        try:
            out[sample] = read_image(str(listing["file"][sample]), int(listing["row"][sample]), open_h5)
        except (OSError, ValueError, KeyError) as err:
            log.warning("tile %s of %s not readable: %s", sample, dataset, err)
    for handle in open_h5.values():
        handle.close()
    return out

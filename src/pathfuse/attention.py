"""The experts' tile attention on test slides: the ``attention`` table (no torch here).

An ABMIL expert's attention says which tiles its slide vector is made of. The expert job records
it for the **test** samples of every outer fold (the outer model only; never train, val or
out-of-fold rows, which nobody should read as "where the model looks on unseen data"), one row
per tile, and the report draws it over the slide (:mod:`pathfuse.report.attention`). The report
reads this module's table without torch, so it lives outside the expert stage's module.

Attention values of different experts are not comparable as they are: a softmax over 3,000
tiles is ~10x smaller per tile than over 300, and a sharper expert puts most of its mass on a
few tiles. :func:`rank_normalise` maps each slide's attention to its within-slide rank in [0, 1],
which is what the figures colour, so the same colour means "as much above this expert's other
tiles" for every expert and bag size.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pathfuse.io import read_parquet, write_parquet

SCHEMA = "attention"
COLUMNS = ["fold", "sample_id", "slide_id", "tile", "x", "y", "attention"]


def attention_frame(
    fold: int,
    sample_id: str,
    slide_ids: Sequence[str],
    lengths: Sequence[int],
    coords: Sequence[np.ndarray | None],
    attention: np.ndarray,
) -> pd.DataFrame:
    """Rows of one test sample's bag, split back into its slides.

    A patient-level bag concatenates its slides' tiles in ``slide_ids`` order; ``lengths`` and
    ``coords`` (level-0 x, y per tile, or None for bags imported without coordinates: then x
    and y are null) are per slide, in that order. ``tile`` is the row in the slide's features file.
    """
    if int(sum(lengths)) != len(attention):
        raise ValueError(f"sample {sample_id}: {len(attention)} attention values for {sum(lengths)} tiles")
    parts = []
    for slide, n, xy in zip(slide_ids, lengths, coords, strict=True):
        x = pd.array(xy[:, 0] if xy is not None else [None] * n, dtype="Int64")
        y = pd.array(xy[:, 1] if xy is not None else [None] * n, dtype="Int64")
        parts.append(pd.DataFrame({"slide_id": str(slide), "tile": np.arange(n, dtype=np.int32), "x": x, "y": y}))
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=COLUMNS[2:6])
    frame.insert(0, "sample_id", str(sample_id))
    frame.insert(0, "fold", np.int32(fold))
    frame["attention"] = np.asarray(attention, dtype=np.float32)
    return frame[COLUMNS]


def empty_frame() -> pd.DataFrame:
    """The table with no rows (tile tasks, or a run without test samples), typed as the contract says."""
    return pd.DataFrame({"fold": pd.Series(dtype=np.int32), "sample_id": pd.Series(dtype=str),
                         "slide_id": pd.Series(dtype=str), "tile": pd.Series(dtype=np.int32),
                         "x": pd.array([], dtype="Int64"), "y": pd.array([], dtype="Int64"),
                         "attention": pd.Series(dtype=np.float32)})


def write_attention(frames: Sequence[pd.DataFrame], path: Path, meta: dict[str, object]) -> Path:
    """Write one (task, encoder)'s attention rows atomically (schema ``attention``)."""
    frame = pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) \
        else empty_frame()
    return write_parquet(frame, path, schema=SCHEMA, meta=meta)


def read_attention(path: Path, sample_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """An attention table, optionally only some samples' rows (the report reads a few slides)."""
    frame, _ = read_parquet(path, schema=SCHEMA)
    return frame if sample_ids is None else frame[frame["sample_id"].isin(list(sample_ids))]


def rank_normalise(values: np.ndarray) -> np.ndarray:
    """Within-group ranks mapped to [0, 1] (ties share their mean rank; one tile → 1.0)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) <= 1:
        return np.ones(len(values))
    return (pd.Series(values).rank(method="average").to_numpy() - 1) / (len(values) - 1)

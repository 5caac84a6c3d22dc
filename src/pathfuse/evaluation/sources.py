"""The prediction files a task expects (experts, then fusers) and their test/val rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pathfuse.config import Config, TaskSpec
from pathfuse.io import read_parquet

#: Prediction columns scoring needs (embeddings and gate weights are left on disk).
_SCORE_COLUMNS = ["fold", "split", "oof", "sample_id", "patient_id", "label", "time", "event", "logits"]


@dataclass(frozen=True)
class Source:
    """One prediction file a task expects: an expert (per encoder) or a fusion method."""

    method: str
    family: str | None  # None: a fusion method whose file is missing (family unknown)
    encoder: str | None
    path: Path


@dataclass
class Loaded:
    """A source's test/val rows (out-of-fold rows dropped) and its file metadata."""

    source: Source
    rows: pd.DataFrame
    meta: dict[str, Any]

    def test(self, fold: int | None = None) -> pd.DataFrame:
        """Test rows, of one fold or (``fold=None``) of all folds; the rows metrics are computed on."""
        keep = self.rows["split"] == "test"
        if fold is not None:
            keep &= self.rows["fold"] == fold
        return self.rows[keep]

    def val(self, fold: int) -> pd.DataFrame:
        """Validation rows of one fold, for the references fitted on data the test set never saw."""
        return self.rows[(self.rows["split"] == "val") & (self.rows["fold"] == fold)]

    @property
    def bin_edges(self) -> Mapping[str, Sequence[float]] | None:
        """Per-fold time-bin edges from the file metadata (keys are fold numbers as strings).

        None when the source's kind does not bin times, or the file predates the field.
        """
        return self.meta.get("bin_edges")

    def fold_edges(self, fold: int) -> Sequence[float] | None:
        """The time-bin edges one fold's model was trained with, None when the source has none."""
        return (self.bin_edges or {}).get(str(fold))


def expected_sources(cfg: Config, task: TaskSpec, seed: int = 0) -> list[Source]:
    """Every prediction file the task should have (of one training seed): experts first, then fusers."""
    experts = [Source(enc, "expert", enc, cfg.layout.expert_predictions(task.id, enc, seed))
               for enc in task.encoders]
    fusers = [Source(m, None, None, cfg.layout.fusion_predictions(task.id, m, seed))
              for m in cfg.fusion_methods]
    return experts + fusers


def load_source(source: Source, task: TaskSpec) -> Loaded | None:
    """Read a prediction file (None when it does not exist); other schemas fail clearly."""
    if not source.path.exists():
        return None
    df, meta = read_parquet(source.path, schema="predictions", columns=_SCORE_COLUMNS)
    if meta.get("task") not in (None, task.id):
        raise ValueError(f"{source.path}: predictions of task {meta.get('task')!r}, expected {task.id!r}; "
                         "delete the file and re-run the stage that writes it")
    df = df[~df["oof"].astype(bool)]
    family = meta.get("family") or source.family or "fuser"
    return Loaded(Source(source.method, family, source.encoder, source.path), df.reset_index(drop=True), meta)


def expected_folds(task: TaskSpec, loaded: list[Loaded]) -> list[int]:
    """Outer folds every method must have: the task's fold count and any fold a file holds."""
    seen = {int(f) for x in loaded for f in x.test()["fold"].unique()}
    return sorted(set(range(task.n_folds)) | seen)


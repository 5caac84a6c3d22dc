"""The long ``metrics`` table of docs/architecture.md: its columns, one row, missing cells."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pathfuse.config import TaskSpec
from pathfuse.evaluation.sources import Source

DELTA_PREFIX = "delta_"
METRICS_COLUMNS = [
    "task", "kind", "method", "family", "encoder", "fold", "statistic", "split", "metric", "value", "ci_low",
    "ci_high", "n_samples", "n_patients", "n_undefined", "status", "note", "reference", "p_value",
]


def metric_row(task: TaskSpec, source: Source, fold: int, split: str, metric: str, value: float = np.nan, *,
               statistic: str = "fold", ci: tuple[float, float] = (np.nan, np.nan), n_samples: int = 0,
               n_patients: int = 0, n_undefined: int = 0, status: str = "ok", note: str = "",
               reference: str | None = None, p_value: float = np.nan) -> dict[str, Any]:
    """One row of the metrics table (NaN value, status ok and no CI unless given)."""
    return {
        "task": task.id, "kind": task.kind, "method": source.method, "family": source.family,
        "encoder": source.encoder, "fold": fold, "statistic": statistic, "split": split, "metric": metric,
        "value": value, "ci_low": ci[0], "ci_high": ci[1], "n_samples": n_samples, "n_patients": n_patients,
        "n_undefined": n_undefined, "status": status, "note": note, "reference": reference, "p_value": p_value,
    }


def missing_rows(task: TaskSpec, source: Source, folds: list[int], metric: str, note: str,
                 reference: str | None = None) -> list[dict[str, Any]]:
    """Missing cells of one metric: every fold and the mean."""
    return [metric_row(task, source, f, "test", metric, statistic="fold" if f >= 0 else "mean", status="missing",
                       note=note, reference=reference) for f in [*folds, -1]]


def undefined_note(task: TaskSpec, metric: str, folds: list[int]) -> str:
    """Why a metric has no value on the named folds' test sets."""
    why = task.kind_strategy.undefined_reason
    return f"{metric} undefined on the test set of fold(s) {folds} ({why}); left out of the mean"


def metrics_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows → the metrics table with stable dtypes (empty strings never stand for nulls)."""
    df = pd.DataFrame(rows, columns=METRICS_COLUMNS)
    for col in ("fold", "n_samples", "n_patients", "n_undefined"):
        df[col] = df[col].astype("int64")
    for col in ("value", "ci_low", "ci_high", "p_value"):
        df[col] = df[col].astype("float64")
    return df


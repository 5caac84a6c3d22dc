"""Prediction rows reduced to scoring units: one per patient (slide tasks) or per tile.

Slide-task metrics are per patient: the kind's row scores are first averaged per patient (class
probabilities = mean of the rows' softmax; hazards = mean of the rows' sigmoid), because a
patient with three slides must not count three times. Tile tasks are scored per tile; their
``patient_id`` only ties tiles together in the bootstrap (:mod:`pathfuse.evaluation.metrics`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, cast

import numpy as np
import pandas as pd

from pathfuse.config import TaskSpec
from pathfuse.kinds import TaskKind

log = logging.getLogger(__name__)

BinEdges = Sequence[float] | np.ndarray | Mapping[Any, Sequence[float]] | None


class UndefinedMetric(ValueError):
    """The metric has no value on these samples."""


@dataclass(frozen=True)
class Units:
    """Predictions reduced to one unit per patient (arrays aligned by unit).

    Bootstraps resample patient codes and score the units of the picked patients
    (:meth:`units_of`), so a patient's rows always enter a resample together.
    """

    patient: np.ndarray  # patient code per unit (int)
    n_patients: int
    label: np.ndarray | None = None  # classification
    probs: np.ndarray | None = None
    time: np.ndarray | None = None  # survival
    event: np.ndarray | None = None
    risk: np.ndarray | None = None
    curves: np.ndarray | None = None  # [units, grid] survival curves, or None without bin edges
    grid: np.ndarray | None = None

    @cached_property
    def _by_patient(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        order = np.argsort(self.patient, kind="stable")
        counts = np.bincount(self.patient, minlength=self.n_patients)
        return order, np.cumsum(counts) - counts, counts

    def units_of(self, picked_patients: np.ndarray) -> np.ndarray:
        """Unit indices of (re)sampled patient codes, with multiplicity (vectorised)."""
        order, starts, counts = self._by_patient
        lengths = counts[picked_patients]
        offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return order[np.repeat(starts[picked_patients], lengths) + offsets]


def required(values: np.ndarray | None, what: str) -> np.ndarray:
    """The units' ``what`` array, which the kernels of the units' own task kind always find set.

    Units carry the arrays of one task kind only (labels and probabilities, or times, events and
    risks); a kernel of the other kind is a programming error, reported here by name rather than
    as an index into None.
    """
    if values is None:
        raise TypeError(f"these units carry no {what} (a metric of another task kind?)")
    return values


def _stack_logits(preds: pd.DataFrame) -> np.ndarray:
    return np.stack([np.asarray(v, dtype=np.float64) for v in preds["logits"]])


def aggregate(
    task: TaskSpec,
    preds: pd.DataFrame,
    bin_edges: BinEdges,
    need_curves: bool,
    patients: Sequence[str] | None = None,
) -> Units:
    """Average rows per patient (classification: per patient and label).

    ``patients`` fixes the patient codes (their order), so that two methods aggregated with
    the same list can be resampled with the same codes (a paired bootstrap).
    """
    if len(preds) == 0:
        raise ValueError(f"task {task.id}: no prediction rows to score")
    patient_ids = preds["patient_id"].astype(str).to_numpy()
    order = np.asarray(patients) if patients is not None else np.unique(patient_ids)
    code_of = {p: i for i, p in enumerate(order)}
    codes = np.array([code_of[p] for p in patient_ids])
    logits = _stack_logits(preds)
    kind = task.kind_strategy
    if kind.time_to_event:
        return _aggregate_times(kind, preds, codes, len(order), logits, bin_edges, need_curves)
    probs = kind.row_scores(logits)
    labels = preds["label"].to_numpy(dtype=np.int64)
    # Slide tasks: one unit per patient (and label). Tile tasks are scored per tile, as published;
    # their patient (group) only ties tiles together in the bootstrap.
    second = labels if task.is_slide_task else np.arange(len(labels))
    keys = pd.DataFrame({"p": codes, "y": second})
    # pandas-stubs type group keys as Hashable; grouping by two int columns gives (p, y) tuples.
    grouped = cast("dict[tuple[int, int], np.ndarray]", keys.groupby(["p", "y"], sort=True).indices)
    unit_p = np.array([k[0] for k in grouped])
    if task.is_slide_task and len(unit_p) != len(np.unique(unit_p)):
        log.warning(
            "task %s: %d patient(s) carry rows with different labels; each label is scored as its own unit",
            task.id,
            len(unit_p) - len(np.unique(unit_p)),
        )
    return Units(
        patient=unit_p,
        n_patients=len(order),
        label=np.array([labels[rows[0]] for rows in grouped.values()]),
        probs=kind.unit_scores(np.stack([probs[rows].mean(axis=0) for rows in grouped.values()])),
    )


def _aggregate_times(
    kind: TaskKind,
    preds: pd.DataFrame,
    codes: np.ndarray,
    n_patients: int,
    logits: np.ndarray,
    bin_edges: BinEdges,
    need_curves: bool,
) -> Units:
    # pandas-stubs type group keys as Hashable; grouping by the int patient codes gives ints.
    rows_of = cast("dict[int, np.ndarray]", pd.Series(np.arange(len(codes))).groupby(codes, sort=True).indices)
    unit_p = np.array(sorted(rows_of))
    hazards = kind.row_scores(logits)
    risk = kind.unit_scores(np.stack([hazards[rows_of[p]].mean(axis=0) for p in unit_p]))
    time = preds["time"].to_numpy(dtype=np.float64)
    event = preds["event"].to_numpy(dtype=np.int64)
    first = np.array([rows_of[p][0] for p in unit_p])
    curves = grid = None
    if need_curves and bin_edges is not None:
        grid = _time_grid(time[first], event[first])
        row_edges = _edges_per_row(preds, bin_edges)
        row_curves = np.stack([_curve(h, e, grid) for h, e in zip(hazards, row_edges, strict=True)])
        curves = np.stack([row_curves[rows_of[p]].mean(axis=0) for p in unit_p])
    return Units(
        patient=unit_p,
        n_patients=n_patients,
        time=time[first],
        event=event[first],
        risk=risk,
        curves=curves,
        grid=grid,
    )


def _edges_per_row(preds: pd.DataFrame, bin_edges: BinEdges) -> list[np.ndarray]:
    if isinstance(bin_edges, Mapping):
        by_fold = {int(k): np.asarray(v, dtype=np.float64) for k, v in bin_edges.items()}
        missing = sorted(set(preds["fold"].astype(int)) - set(by_fold))
        if missing:
            raise ValueError(f"bin_edges has no entry for fold(s) {missing}")
        return [by_fold[int(f)] for f in preds["fold"]]
    edges = np.asarray(bin_edges, dtype=np.float64)
    return [edges] * len(preds)


def _curve(hazards: np.ndarray, edges: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """S(t) on ``grid``: piecewise linear inside each bin, flat beyond the last edge."""
    surv = np.concatenate([[1.0], np.cumprod(1.0 - hazards)])
    return np.interp(grid, edges, surv)


def _time_grid(time: np.ndarray, event: np.ndarray) -> np.ndarray:
    """Evaluation times of the IBS: observed event times below the largest observed time."""
    return np.unique(time[(event == 1) & (time < time.max())])


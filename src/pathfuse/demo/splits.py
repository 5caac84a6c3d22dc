"""The demo's split CSVs: patient-level, stratified train/val/test folds in the published format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pathfuse.demo.tiles import seeded_rng
from pathfuse.io import atomic_path


def make_splits(
    seed: int, key: str, cases: list[str], strata: np.ndarray, n_folds: int, coverage: list[np.ndarray],
    val_fraction: float = 0.2, attempts: int = 200,
) -> list[dict[str, list[str]]]:
    """Patient-level, stratified train/val/test splits, one dict per fold.

    ``n_folds`` > 1: stratified k-fold test sets (each case in exactly one test set); 1: a
    stratified 25 % test set. Validation is a stratified ``val_fraction`` of the rest. Strata
    with a single case always stay in train. Among seeded attempts, the first in which every
    label in ``coverage`` has all of its classes in every fold's train set (and, for classes
    with at least ``n_folds`` cases, in every test set) is kept — else the best one.
    """
    rng = seeded_rng(seed, "splits", key)
    strata = np.asarray(strata)
    best: tuple[int, list[dict[str, list[int]]]] | None = None  # (problems, folds of case indices)
    for _ in range(attempts):
        folds = _draw_folds(rng, strata, n_folds, val_fraction)
        problems = _coverage_problems(folds, coverage)
        if best is None or problems < best[0]:
            best = (problems, folds)
        if problems == 0:
            break
    assert best is not None
    return [{part: sorted(cases[i] for i in members) for part, members in fold.items()} for fold in best[1]]


def _draw_folds(
    rng: np.random.Generator, strata: np.ndarray, n_folds: int, val_fraction: float
) -> list[dict[str, list[int]]]:
    n = len(strata)
    order = np.lexsort((rng.random(n), strata))  # cases grouped by stratum, random within
    values, counts = np.unique(strata, return_counts=True)
    single = set(values[counts < 2].tolist())
    dealt = [i for i in order if strata[i] not in single]
    period = n_folds if n_folds > 1 else 4
    offset = int(rng.integers(period))
    test_of = {case: (pos + offset) % period for pos, case in enumerate(dealt)}
    folds = []
    for fold in range(n_folds):
        test = [i for i in order if test_of.get(i, -1) == fold]
        rest = [i for i in order if test_of.get(i, -1) != fold]
        val = _pick_val(strata, rest, max(1, round(val_fraction * len(rest))))
        train = [i for i in rest if i not in set(val)]
        folds.append({"train": sorted(train), "val": sorted(val), "test": sorted(test)})
    return folds


def _pick_val(strata: np.ndarray, rest: list[int], n_val: int) -> list[int]:
    """``n_val`` cases spread evenly over the stratum-sorted ``rest``, never a stratum's last one.

    Only when every stratum is down to one case (tiny cohorts) does val take a stratum's only
    case, because an empty validation set would leave nothing for early stopping.
    """
    left = {value: int((strata[rest] == value).sum()) for value in set(strata[rest].tolist())}
    spread = [rest[int((j + 0.5) * len(rest) / n_val)] for j in range(n_val)]
    val: list[int] = []
    for case in [*spread, *(i for i in rest if i not in set(spread))]:
        if len(val) < n_val and left[strata[case]] > 1:
            val.append(case)
            left[strata[case]] -= 1
    return sorted(val) if val else spread[:1]


def _coverage_problems(folds: list[dict[str, list[int]]], coverage: list[np.ndarray]) -> int:
    problems = 0
    for labels in coverage:
        values, counts = np.unique(labels, return_counts=True)
        for fold in folds:
            problems += 1000 * len(set(values) - set(labels[fold["train"]].tolist()))
            wanted = set(values[counts >= len(folds)].tolist()) if len(folds) > 1 else set()
            problems += len(wanted - set(labels[fold["test"]].tolist()))
    return problems


def write_split_csv(path: Path, fold: dict[str, list[str]]) -> None:
    """``train,val,test`` columns of case ids, ragged columns padded with empty cells."""
    frame = pd.DataFrame({part: pd.Series(fold[part], dtype=object) for part in ("train", "val", "test")})
    write_csv(frame, path)


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """Write a CSV atomically (no index column)."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


"""Model choice of a logit-level learner that learns from the validation split (``train_on: val``).

Why: with ``train_on: val`` the gate (LogitProd, logitprod_converged) learns from the experts'
validation logits, which no expert was trained on, so no inner-fold expert has to be trained.
The validation split then cannot also choose the gate's own settings (λ, weight decay, stopping
epoch): a choice made on the rows the gate was fitted to would always favour the least
regularised candidate. Instead a patient-level, stratified k-fold over the validation samples
does: every candidate is fitted on k−1 parts and scored on the held-out part by the fused NLL
(defined and stable on a few dozen rows, unlike a c-index on a fifth of a validation set); the
held-out NLLs, pooled over the parts, choose the candidate (and, for an epoch-wise trainer, its
epoch count), and the learner is then refitted on every validation sample with that choice.
Test rows are never read. The gate has (3M+2)·M weights, so the k·|grid| extra fits are cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pathfuse.data.splits import patient_kfold
from pathfuse.fusion.blocks import Block
from pathfuse.fusion.context import FusionInputError

#: A candidate setting, e.g. {"corr_weight": λ, "weight_decay": wd}.
Candidate = dict[str, float]
#: (candidate, fit rows, held-out rows) → held-out NLL after each epoch (one value for a converged fit).
HeldOutCurve = Callable[[Candidate, Block, Block], np.ndarray]


def grid(corr_weights: Sequence[float], weight_decays: Sequence[float]) -> list[Candidate]:
    """Every (λ, weight decay) pair, λ-major: the gates' candidate settings."""
    return [{"corr_weight": float(c), "weight_decay": float(d)} for c in corr_weights for d in weight_decays]


@dataclass
class ValChoice:
    """The chosen candidate, its epoch count, and every candidate's pooled held-out NLL (for the metadata)."""

    candidate: Candidate
    epochs: int
    held_out_nll: float
    table: list[dict[str, Any]]


def val_partitions(block: Block, k: int, seed: int, stratify_by: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Patient-level stratified k-fold of a validation block: [(fit rows, held-out rows)] as row indices.

    ``k`` shrinks to the number of validation patients when there are fewer; fewer than 2 patients
    leave nothing to choose on, which is an error naming the fix.
    """
    frame = pd.DataFrame({"sample_id": block.sample_id.astype(str), "patient_id": block.patient_id.astype(str),
                          "label": block.label, "event": block.event})
    k = min(k, frame["patient_id"].nunique())
    if k < 2:
        raise FusionInputError(f"train_on: val needs at least 2 validation patients to choose the gate's settings, "
                               f"got {frame['patient_id'].nunique()}; use train_on: oof")
    position = {sid: i for i, sid in enumerate(frame["sample_id"])}
    return [(np.array([position[s] for s in fit]), np.array([position[s] for s in held]))
            for fit, held in patient_kfold(frame, k, seed, stratify_by)]


def choose_on_val_folds(val: Block, parts: Sequence[tuple[np.ndarray, np.ndarray]], candidates: Sequence[Candidate],
                        held_out_curve: HeldOutCurve) -> ValChoice:
    """The (candidate, epoch count) with the lowest held-out NLL pooled over the parts (ties: the earlier).

    Each part's curve is weighted by its held-out rows; an epoch counts only where every part's
    fit got that far (an early-stopped fit ran at least its best epoch plus its patience).
    """
    table, best = [], None
    for candidate in candidates:
        curves = [held_out_curve(candidate, val.take(fit), val.take(held)) for fit, held in parts]
        length = min(len(c) for c in curves)
        weights = np.array([len(held) for _, held in parts], dtype=np.float64)
        pooled = (np.stack([c[:length] for c in curves]) * weights[:, None]).sum(0) / weights.sum()
        epoch = int(np.nanargmin(pooled)) if np.isfinite(pooled).any() else 0
        row = {**candidate, "epochs": epoch + 1, "held_out_nll": float(pooled[epoch])}
        table.append(row)
        if best is None or row["held_out_nll"] < best.held_out_nll:
            best = ValChoice(candidate, epoch + 1, row["held_out_nll"], table)
    if best is None:
        raise ValueError("no candidate to choose from")
    return best

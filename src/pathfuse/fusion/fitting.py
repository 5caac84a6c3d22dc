"""Pieces the trainable fusion methods share: in-memory batches, losses, validation monitors, cost.

The neural methods (Shazam, concat) train with :func:`pathfuse.training.fit`, the one loop
for heads and fusers. What is here adapts fusion inputs to it: batches of tensors that already
sit in memory (tile features; no DataLoader workers or per-item collation needed), the task
loss of each task kind, the validation score that early stopping monitors, and the cost facts
(parameters, forward FLOPs) written to the predictions' metadata. LogitProd's gate has its
own trainer (:mod:`pathfuse.fusion.gate_training`) but shares the monitors and cost facts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pathfuse.evaluation.metrics import score
from pathfuse.fusion.blocks import Block
from pathfuse.fusion.context import FusionContext
from pathfuse.kinds import TaskKind


class TensorBatches:
    """Mini-batches sliced from tensors held in memory, reshuffled each epoch by a seeded generator.

    Yields the dict batches :func:`pathfuse.training.fit` expects: ``inputs`` (the model's
    keyword arguments) plus target tensors. ``index`` (row numbers into the block) is always
    present so that a validation score can find each output's sample.
    """

    def __init__(
        self, inputs: Mapping[str, torch.Tensor | list[torch.Tensor]], targets: Mapping[str, torch.Tensor],
        batch_size: int, *, shuffle: bool, seed: int = 0,
    ) -> None:
        first = next(iter(inputs.values()))
        n = len(first[0] if isinstance(first, list) else first)
        self.inputs, self.batch_size, self.shuffle = dict(inputs), batch_size, shuffle
        self.targets = {**targets, "index": torch.arange(n)}
        self.n = n
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        order = torch.randperm(self.n, generator=self.generator) if self.shuffle else torch.arange(self.n)
        inputs = {k: _take(v, order) for k, v in self.inputs.items()}
        targets = {k: v[order] for k, v in self.targets.items()}
        for start in range(0, self.n, self.batch_size):
            rows = slice(start, start + self.batch_size)
            yield {"inputs": {k: _take(v, rows) for k, v in inputs.items()},
                   **{k: v[rows] for k, v in targets.items()}}


def _take(value: torch.Tensor | list[torch.Tensor], rows: torch.Tensor | slice) -> torch.Tensor | list[torch.Tensor]:
    """Rows of a tensor, or of each tensor of a list (one per teacher)."""
    return [t[rows] for t in value] if isinstance(value, list) else value[rows]


def block_targets(block: Block, kind: TaskKind) -> dict[str, torch.Tensor]:
    """The target tensors of a block, as the task's kind defines them (e.g. labels, or bins and events)."""
    return kind.training().block_targets(block)


def task_loss(kind: TaskKind, alpha: float) -> Callable[[torch.Tensor, Mapping[str, Any]], torch.Tensor]:
    """``(logits, batch) -> loss`` of the task's kind (e.g. cross-entropy, or the survival NLL)."""
    return kind.training().loss(alpha)


Monitor = tuple[str, str, Callable[[torch.Tensor, Mapping[str, torch.Tensor]], float]]


def scored_monitor(
    ctx: FusionContext, val: Block, fold: int, name: str, weights: Mapping[str, float],
    to_logits: Callable[[torch.Tensor], torch.Tensor] = lambda out: out,
) -> Monitor:
    """An early-stopping monitor ``Σ weight·metric`` on the VALIDATION block, scored per patient.

    Scoring goes through :func:`pathfuse.evaluation.metrics.score`, the function that later evaluates
    the test set, so "best on validation" means the same thing as the reported numbers.

    Args:
        ctx: the task's fusion inputs (its kind and the fold's survival bin edges).
        val: the fold's validation block; a batch's ``index`` targets select its rows.
        fold: the outer fold, written into the scored rows and used for the bin edges.
        name: the monitor's name in the training curve.
        weights: metric → weight, e.g. ``{"balanced_accuracy": 0.8, "weighted_f1": 0.2}``.
        to_logits: turns model outputs into contract logits (e.g. drops extra columns).
    """
    frame = val.frame(fold, "val", False)

    def metric(outputs: torch.Tensor, targets: Mapping[str, torch.Tensor]) -> float:
        logits = to_logits(outputs).detach().numpy()
        rows = frame.iloc[targets["index"].numpy()].copy()
        rows["logits"] = list(logits)
        values = score(ctx.task, rows, metrics=list(weights), bin_edges=ctx.fold_bin_edges(fold))
        return float(sum(w * values[m] for m, w in weights.items()))

    return name, "max", metric


#: Shazam's published model choice where the task's kind names no early-stopping score.
SHAZAM_SCORE = ("0.8*bal_acc+0.2*w_f1", {"balanced_accuracy": 0.8, "weighted_f1": 0.2})


def shazam_monitor(ctx: FusionContext, val: Block, fold: int,
                   to_logits: Callable[[torch.Tensor], torch.Tensor] = lambda out: out) -> Monitor:
    """Shazam's model choice: the kind's early-stopping score (survival: c-index).

    Kinds without one use the published score, 0.8·balanced accuracy + 0.2·weighted F1.
    """
    name, weights = ctx.task.kind_strategy.early_stopping_score or SHAZAM_SCORE
    return scored_monitor(ctx, val, fold, name, weights, to_logits)


def kind_monitor(ctx: FusionContext, val: Block, fold: int) -> Monitor | None:
    """The kind's early-stopping score on validation (survival: c-index); None: stop on the loss."""
    score_of_kind = ctx.task.kind_strategy.early_stopping_score
    return scored_monitor(ctx, val, fold, *score_of_kind) if score_of_kind else None


def forward_flops(model: nn.Module, forward: Callable[[], torch.Tensor], n_samples: int) -> int | None:
    """Forward FLOPs per sample, counted by torch's FLOP counter on one real forward pass.

    The counter sees matrix products (the bulk of the cost of every model here); element-wise
    operations are not counted. Returns None if nothing was counted.
    """
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        forward()
    total = counter.get_total_flops()
    return round(total / max(n_samples, 1)) if total else None

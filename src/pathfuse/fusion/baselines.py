"""The bars a fuser must clear, on the same folds and rows as the fusers.

* ``best_val_expert``: per fold, the expert with the best validation score (the fair bar: a
  user without test labels could have picked it).
* ``oracle_expert``: per fold, the expert with the best TEST score; reported but marked
  family ``oracle`` (no honest method can know it).
* ``mean_logits`` / ``mean_probs``: untrained averages. Survival: the mean of the hazard
  logits (a geometric mean of the hazard odds) / the mean of the event distributions over
  T+1 outcomes, converted back to hazards — both are valid survival models.
* ``stacking``: a linear model on the concatenated expert outputs, fitted by default on the
  experts' out-of-fold training logits (in-sample logits are over-confident on the very samples
  the stacker would learn from); ``train_on: val`` fits it on the validation logits instead (no
  inner-fold experts), ``in_sample`` on the experts' own training logits. Classification:
  multinomial logistic regression on the standardised log-probabilities; survival: a linear map
  of the standardised hazard logits to T hazard logits fitted by the discrete-time NLL with the
  same L2 convention.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from pathfuse import selection
from pathfuse.fusion import FoldOutput, apply
from pathfuse.fusion.blocks import Block
from pathfuse.fusion.context import FusionContext, read_record
from pathfuse.heads.losses import survival_nll
from pathfuse.selection import primary_metric
from pathfuse.settings import StackingSettings

log = logging.getLogger(__name__)


def _map_blocks(ctx: FusionContext, fold: int, combine: Any, model: dict[str, Any],
                extra: dict[str, Any] | None = None) -> FoldOutput:
    """Apply an untrained ``combine(task, model, logits [N, M, K])`` (:mod:`pathfuse.fusion.apply`) to every block."""
    start = time.perf_counter()
    logits = {key: combine(ctx.task, model, b.logits)[0] for key, b in ctx.blocks[fold].items()}
    cost = {"train_seconds": time.perf_counter() - start, "params": 0, "flops": None, "best_epoch": None}
    return FoldOutput(logits=logits, cost={**cost, **(extra or {})}, model=model)


# ----------------------------------------------------------------------------- expert choice
def rank_experts(ctx: FusionContext, fold: int, split: str) -> list[dict[str, Any]]:
    """Each expert's score on one split of a fold, best first, by :func:`pathfuse.selection.rank_experts`.

    The evaluation's reference uses the same rule, so ``best_val_expert`` is that reference.
    """
    block = ctx.block(fold, split)
    frames = {}
    for m, enc in enumerate(ctx.encoders):
        frame = block.frame(fold, split, False)
        frame["logits"] = list(block.logits[:, m])
        frames[enc] = frame
    ranked = selection.rank_experts(ctx.task, frames, ctx.encoders, primary_metric(ctx.cfg, ctx.task),
                                    ctx.fold_bin_edges(fold), ctx.settings.survival_alpha)
    return [s.as_dict() for s in ranked]


def _chosen_expert(ctx: FusionContext, fold: int, split: str) -> FoldOutput:
    start = time.perf_counter()
    ranked = rank_experts(ctx, fold, split)
    out = _map_blocks(ctx, fold, apply.chosen_expert, {"expert": int(ranked[0]["index"]),
                                                      "encoder": ranked[0]["encoder"]})
    out.cost.update(train_seconds=time.perf_counter() - start, chosen_expert=ranked[0]["encoder"],
                    chosen_on=split, ranking=ranked)
    return out


def best_val_expert(ctx: FusionContext, fold: int) -> FoldOutput:
    """The validation-selected expert's predictions, unchanged."""
    return _chosen_expert(ctx, fold, "val")


def oracle_expert(ctx: FusionContext, fold: int) -> FoldOutput:
    """The test-selected expert's predictions (an upper bound on expert selection)."""
    return _chosen_expert(ctx, fold, "test")


# ----------------------------------------------------------------------------- averages
def mean_logits(ctx: FusionContext, fold: int) -> FoldOutput:
    """Average of the experts' logits (class logits, or hazard logits)."""
    return _map_blocks(ctx, fold, apply.mean_logits, {})


def mean_probs(ctx: FusionContext, fold: int) -> FoldOutput:
    """Average of the experts' distributions; output as log-probs or hazard logits."""
    return _map_blocks(ctx, fold, apply.mean_probs, {})


# ----------------------------------------------------------------------------- stacking
def _stack_features(block: Block, survival: bool) -> np.ndarray:
    """Concatenated expert outputs [N, M·K]: log-probabilities, or raw hazard logits."""
    return apply.stack_features(block.logits, survival)


def stacking(ctx: FusionContext, fold: int) -> FoldOutput:
    """Linear stacker on the concatenated expert outputs, fitted on the rows its ``train_on`` names.

    Its C is fixed (no model choice), so with ``train_on: val`` nothing else needs the validation rows.
    """
    start = time.perf_counter()
    settings = ctx.settings.stacking
    train, trained_on = ctx.training_block(fold, settings.train_on, "stacking")
    survival = ctx.task.kind_strategy.time_to_event  # stacks hazard logits, fitted by the survival NLL
    scaler = StandardScaler().fit(_stack_features(train, survival))
    if survival:
        model, params = _fit_survival_stack(train, scaler, settings, ctx.settings.survival_alpha,
                                            ctx.seed("stacking", fold))
    else:
        model, params = _fit_logistic_stack(ctx, train, scaler, settings)
    model = {"survival": survival, "mean": scaler.mean_.tolist(), "scale": scaler.scale_.tolist(), **model}
    train_seconds = time.perf_counter() - start
    logits = {key: apply.stacking(ctx.task, model, b.logits)[0] for key, b in ctx.blocks[fold].items()}
    n_features = scaler.n_features_in_
    cost = {"train_seconds": train_seconds, "params": params, "flops": 2 * n_features * logits[("val", False)].shape[1],
            "best_epoch": None, **read_record(trained_on)}
    return FoldOutput(logits=logits, cost=cost, model=model)


def _fit_logistic_stack(ctx: FusionContext, train: Block, scaler: StandardScaler,
                        settings: StackingSettings) -> tuple[dict[str, Any], int]:
    """Multinomial logistic regression (its record for :func:`pathfuse.fusion.apply.stacking`, its size).

    Classes absent from training get log-probability −30.
    """
    n_classes = train.logits.shape[2]
    x = scaler.transform(_stack_features(train, False))
    present = np.unique(train.label)
    if len(present) < 2:
        log.warning("task %s: one class in the stacker's training rows; predicting it always", ctx.task.id)
        return {"form": "constant", "out": np.where(np.arange(n_classes) == present[0], 0.0, -30.0).tolist()}, 0
    model = LogisticRegression(C=settings.C, max_iter=settings.max_iter).fit(x, train.label)
    record = {"form": "logistic", "weight": model.coef_.tolist(), "bias": model.intercept_.tolist(),
              "classes": model.classes_.tolist(), "n_classes": n_classes}
    return record, int(model.coef_.size + model.intercept_.size)


def _fit_survival_stack(train: Block, scaler: StandardScaler, settings: StackingSettings, alpha: float,
                        seed: int) -> tuple[dict[str, Any], int]:
    """Linear map of standardised hazard logits [M·T] → T hazard logits, by L-BFGS on the survival NLL.

    Starts from the mean of the experts' hazard logits (in standardised units) and uses the
    logistic-regression L2 convention: mean NLL + ‖W‖² / (2·C·N).
    """
    torch.manual_seed(seed)
    n_bins = train.logits.shape[2]
    x = torch.as_tensor(scaler.transform(_stack_features(train, True)), dtype=torch.float32)
    bins = torch.as_tensor(train.bin_index, dtype=torch.long)
    event = torch.as_tensor(train.event, dtype=torch.float32)
    linear = torch.nn.Linear(x.shape[1], n_bins)
    with torch.no_grad():
        scale = torch.as_tensor(scaler.scale_, dtype=torch.float32)
        mean = torch.as_tensor(scaler.mean_, dtype=torch.float32)
        n_experts = x.shape[1] // n_bins
        avg = torch.eye(n_bins).repeat(1, n_experts) / n_experts  # [T, M·T]: mean over experts
        linear.weight.copy_(avg * scale)
        linear.bias.copy_(avg @ mean)
    l2 = 1.0 / (2.0 * settings.C * max(len(x), 1))
    opt = torch.optim.LBFGS(linear.parameters(), max_iter=settings.max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = survival_nll(linear(x), bins, event, alpha) + l2 * linear.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    record = {"form": "linear", "weight": linear.weight.detach().tolist(), "bias": linear.bias.detach().tolist()}
    return record, int(linear.weight.numel() + linear.bias.numel())

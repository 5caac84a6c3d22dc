"""LogitProd on one outer fold: which expert logits the gate learns from, its model choice, its cost record.

``fusion.logitprod.train_on`` says which rows train the gate and its R matrix:

* ``oof`` (default): the experts' out-of-fold training logits (inner-fold experts); Adam with
  early stopping on the validation rows (the kind's score, else the fused NLL).
* ``in_sample``: the experts' own training logits, as published; stopping as for ``oof``.
* ``val``: the experts' validation logits, which no expert was trained on, so no inner-fold
  expert is needed. λ, weight decay and the epoch count are then chosen by a k-fold over the
  validation samples (:mod:`pathfuse.fusion.val_selection`), and the gate is refitted on all of
  them for that many epochs.

The cost record names the blocks the method read (``logits_read``) and whether that includes
out-of-fold rows (``uses_inner_experts``): the report charges the inner-fold experts only to
the methods that read them, whatever other methods of the run asked for.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from pathfuse.fusion import FoldOutput
from pathfuse.fusion.apply import gate_record
from pathfuse.fusion.blocks import Block
from pathfuse.fusion.context import FusionContext, read_record
from pathfuse.fusion.fitting import block_targets, forward_flops, kind_monitor
from pathfuse.fusion.gate_training import GateFit, GateParams, fused_log_q, nll
from pathfuse.fusion.gate_training import train as train_gate
from pathfuse.fusion.logitprod import (
    LogitProdGate,
    LogitProdObjective,
    gate_inputs,
    gate_movement,
    gate_problem,
    gate_schedule,
    output_logits,
    penalty_matrix,
    predict_blocks,
)
from pathfuse.fusion.val_selection import Candidate, choose_on_val_folds, grid, val_partitions
from pathfuse.settings import GateSchedule
from pathfuse.training import count_parameters


def fit_fold(ctx: FusionContext, fold: int) -> FoldOutput:
    """Train the gate on one outer fold (rows by ``train_on``) and predict every block of it."""
    start = time.perf_counter()
    settings, alpha = ctx.settings.logitprod, ctx.settings.survival_alpha
    survival = ctx.task.kind_strategy.time_to_event  # event distributions over T+1 outcomes, one gate each
    train, trained_on = ctx.training_block(fold, settings.train_on, "logitprod")
    schedule = gate_schedule(settings, ctx.kind)
    if trained_on == "val":
        result, r, corr_weight, extra = _fit_on_val(ctx, fold, train, schedule)
    else:
        r = penalty_matrix(train, survival, alpha, settings.corr_shrinkage)
        corr_weight, extra = settings.corr_weight, {}
        result = _fit_early_stopped(ctx, fold, train, r, schedule)
    train_seconds = time.perf_counter() - start

    model = LogitProdGate(len(ctx.encoders), result.params.layers[-1].shape[1] // len(ctx.encoders),
                          settings.gate_hidden).load(result.params).eval()
    logits, gates = predict_blocks(model, ctx, fold, survival)
    with torch.no_grad():
        train_log_q, train_w = model(**gate_inputs(train, survival))
        objective = LogitProdObjective(r, corr_weight, survival, alpha)(
            train_log_q, train_w, block_targets(train, ctx.task.kind_strategy))
    val_in = gate_inputs(ctx.block(fold, "val"), survival)
    cost = {
        "train_seconds": train_seconds, "params": count_parameters(model),
        "flops": forward_flops(model, lambda: model(**val_in), len(val_in["features"])),
        "best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "monitor": result.monitor,
        "best_value": result.best_value, "train_objective": float(objective), "r_matrix": r.tolist(),
        **read_record(trained_on), "kept_first_epoch": result.best_epoch <= 0,
        **gate_movement(gates[("test", False)], len(ctx.encoders)), **extra,
    }
    return FoldOutput(logits=logits, cost=cost, gate_weights=gates, model=gate_record(model))


def _fit_early_stopped(ctx: FusionContext, fold: int, train: Block, r: np.ndarray, schedule: GateSchedule) -> GateFit:
    """Adam on the training rows, early stopping on the validation rows (``oof``, ``in_sample``)."""
    settings, alpha = ctx.settings.logitprod, ctx.settings.survival_alpha
    survival = ctx.task.kind_strategy.time_to_event
    val = ctx.block(fold, "val")
    train_problem = gate_problem(train, survival, r, settings.corr_weight, alpha)
    val_problem = gate_problem(val, survival, r, settings.corr_weight, alpha)
    # Early stopping: the fused validation NLL (the penalty is a training device, not a score);
    # survival: the validation c-index, as published.
    val_nll = ("nll", "min", lambda params: nll(val_problem, fused_log_q(val_problem, params)))
    monitor = val_nll
    scored = kind_monitor(ctx, val, fold)
    if scored:
        name, mode, score = scored
        rows = {"index": torch.arange(len(val))}
        monitor = (name, mode, lambda params: score(
            output_logits(torch.as_tensor(fused_log_q(val_problem, params)), survival), rows))
    return train_gate(train_problem, schedule, settings.batch_size, ctx.seed("logitprod", fold),
                      settings.gate_hidden, monitor, fallback=val_nll)


def _fit_on_val(ctx: FusionContext, fold: int, val: Block,
                schedule: GateSchedule) -> tuple[GateFit, np.ndarray, float, dict[str, Any]]:
    """``train_on: val``: λ, weight decay and epochs chosen by a k-fold of the validation rows, then a refit on all.

    Each candidate's R comes from the rows it is fitted to, so no held-out row shapes its own fit.
    """
    settings, alpha = ctx.settings.logitprod, ctx.settings.survival_alpha
    survival = ctx.task.kind_strategy.time_to_event
    seed = ctx.seed("logitprod", fold)

    def fit(rows: Block, corr_weight: float, decay: float, epochs: int | None,
            held: Block | None = None) -> tuple[GateFit, np.ndarray, list[float]]:
        """A gate fitted to ``rows``; with ``held``: stopped on its fused NLL, whose curve is returned."""
        r = penalty_matrix(rows, survival, alpha, settings.corr_shrinkage)
        problem = gate_problem(rows, survival, r, corr_weight, alpha)
        curve: list[float] = []
        monitor = None
        if held is not None:
            held_problem = gate_problem(held, survival, r, corr_weight, alpha)

            def held_out_nll(params: GateParams) -> float:
                curve.append(nll(held_problem, fused_log_q(held_problem, params)))
                return curve[-1]

            monitor = ("held_out_nll", "min", held_out_nll)
        update: dict[str, Any] = {"weight_decay": decay, **({} if epochs is None else {"max_epochs": epochs})}
        result = train_gate(problem, schedule.model_copy(update=update), settings.batch_size, seed,
                            settings.gate_hidden, monitor, fallback=None)
        return result, r, curve

    def curve(candidate: Candidate, rows: Block, held: Block) -> np.ndarray:
        return np.asarray(fit(rows, candidate["corr_weight"], candidate["weight_decay"], None, held)[2])

    parts = val_partitions(val, settings.val_folds, seed, ctx.task.kind_strategy.stratify_by)
    candidates = grid(settings.val_corr_weights, settings.val_weight_decays)
    choice = choose_on_val_folds(val, parts, candidates, curve)
    corr_weight, decay = choice.candidate["corr_weight"], choice.candidate["weight_decay"]
    result, r, _ = fit(val, corr_weight, decay, choice.epochs)
    extra = {"val_selection": {"folds": len(parts), "chosen": choice.table[candidates.index(choice.candidate)],
                               "grid": choice.table}}
    return result, r, corr_weight, extra

"""``logitprod_converged``: LogitProd's gate fitted to the optimum of its training objective (opt-in).

Why: LogitProd's guarantee — "never worse than the best expert on the training objective" —
holds at the optimum. The published schedules (Adam, lr 1e-5 or 1e-7, early stopping) may
never get there: on a real 8-class tile task the gate never left its uniform start, and
LogitProd was the mean-logits baseline. This method keeps everything of ``logitprod`` (the
gate, its features, R, the objective, the training rows its own ``train_on`` names) and changes
only the fitting: full-batch L-BFGS (SciPy) on the exact gradient of :mod:`pathfuse.fusion.gate_training`
until the gradient vanishes, for every (λ, weight decay) of a small grid that includes 0; the
pair with the lowest fused NLL on the VALIDATION rows is kept (ties: the earlier grid point).
With ``train_on: val`` the validation rows train the gate, so a k-fold of them chooses the pair
(:mod:`pathfuse.fusion.val_selection`) and the gate is refitted on all of them.
Weight decay enters as ½·wd·‖θ‖² (the objective whose gradient is Adam's L2 term). The published
``logitprod`` stays unchanged, so its results remain reproducible.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from scipy.optimize import minimize

from pathfuse.fusion import FoldOutput, val_selection
from pathfuse.fusion.apply import gate_record
from pathfuse.fusion.blocks import Block
from pathfuse.fusion.context import FusionContext, read_record
from pathfuse.fusion.gate_training import GateParams, GateProblem, fused_log_q, loss_and_grad, nll
from pathfuse.fusion.logitprod import LogitProdGate, gate_movement, gate_problem, penalty_matrix, predict_blocks
from pathfuse.training import count_parameters


def fit_converged(problem: GateProblem, weight_decay: float, max_iter: int = 1000,
                  tol: float = 1e-10) -> tuple[GateParams, float, int]:
    """Minimise the full-batch objective (+ ½·wd·‖θ‖²) from the uniform start with L-BFGS.

    Returns the parameters, the objective reached (penalty included, decay excluded) and the
    number of iterations.
    """
    n_in, n_out = problem.features.shape[1] - 1, problem.n_groups * problem.log_p_t.shape[2]
    shape = (n_in + 1, n_out)

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        params = GateParams([theta.reshape(shape)])
        loss, grads = loss_and_grad(problem, params)
        return loss + 0.5 * weight_decay * float(theta @ theta), grads[0].ravel() + weight_decay * theta

    result = minimize(objective, np.zeros(shape[0] * shape[1]), jac=True, method="L-BFGS-B",
                      options={"maxiter": max_iter, "gtol": tol, "ftol": tol})
    params = GateParams([result.x.reshape(shape)])
    return params, loss_and_grad(problem, params)[0], int(result.nit)


def fit_fold(ctx: FusionContext, fold: int) -> FoldOutput:
    """Fit the gate of one outer fold for every grid point; keep the best held-out one (``train_on``)."""
    start = time.perf_counter()
    settings, alpha = ctx.settings.logitprod_converged, ctx.settings.survival_alpha
    survival = ctx.task.kind_strategy.time_to_event  # event distributions over T+1 outcomes, one gate each
    shrinkage = ctx.settings.logitprod.corr_shrinkage
    train, trained_on = ctx.training_block(fold, settings.train_on, "logitprod_converged")
    grid_points = val_selection.grid(settings.corr_weights, settings.weight_decays)

    def fit(rows: Block, corr_weight: float, weight_decay: float) -> tuple[GateParams, dict[str, Any]]:
        problem = gate_problem(rows, survival, penalty_matrix(rows, survival, alpha, shrinkage), corr_weight, alpha)
        params, objective, iterations = fit_converged(problem, weight_decay, settings.max_iter)
        return params, {"corr_weight": corr_weight, "weight_decay": weight_decay, "train_objective": objective,
                        "iterations": iterations}

    def held_out_nll(rows: Block, held: Block, corr_weight: float,
                     weight_decay: float) -> tuple[GateParams, dict[str, Any]]:
        """A fit on ``rows`` and its facts, with ``val_nll``: the fused NLL on ``held`` (no penalty)."""
        params, facts = fit(rows, corr_weight, weight_decay)
        held_problem = gate_problem(held, survival, np.zeros((len(ctx.encoders),) * 2), corr_weight, alpha)
        return params, {**facts, "val_nll": nll(held_problem, fused_log_q(held_problem, params))}

    extra: dict[str, Any] = {}
    if trained_on == "val":  # the validation rows train the gate: a k-fold of them chooses the grid point
        parts = val_selection.val_partitions(train, settings.val_folds, ctx.seed("logitprod_converged", fold),
                               ctx.task.kind_strategy.stratify_by)
        choice = val_selection.choose_on_val_folds(train, parts, grid_points, lambda cand, rows, held: np.array(
            [held_out_nll(rows, held, **cand)[1]["val_nll"]]))
        params, chosen = fit(train, **choice.candidate)
        chosen["val_nll"] = choice.held_out_nll
        grid = choice.table
        extra["val_selection"] = {"folds": len(parts), "score": "held-out NLL pooled over the validation folds"}
    else:  # every grid point fitted on the training rows, chosen on the validation rows
        fits = [held_out_nll(train, ctx.block(fold, "val"), **cand) for cand in grid_points]
        grid = [facts for _, facts in fits]
        params, chosen = min(fits, key=lambda f: f[1]["val_nll"])
    train_seconds = time.perf_counter() - start
    model = LogitProdGate(len(ctx.encoders), params.layers[0].shape[1] // len(ctx.encoders)).load(params).eval()
    logits, gates = predict_blocks(model, ctx, fold, survival)
    cost: dict[str, Any] = {
        "train_seconds": train_seconds, "params": count_parameters(model), "flops": None, "best_epoch": None,
        **read_record(trained_on), "chosen": chosen, "grid": grid, "kept_first_epoch": False,
        **gate_movement(gates[("test", False)], len(ctx.encoders)), **extra,
    }
    return FoldOutput(logits=logits, cost=cost, gate_weights=gates, model=gate_record(model))

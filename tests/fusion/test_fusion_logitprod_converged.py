"""Opt-in converged LogitProd, gate-movement diagnostics, and when the inner-fold experts are trained."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.synthetic import TASK_OF_KIND, SyntheticTask, fast_fusion_settings, write_synthetic_task

from pathfuse.fusion import FUSERS
from pathfuse.fusion.gate_training import GateProblem, loss_and_grad
from pathfuse.fusion.inputs import load_context
from pathfuse.fusion.logitprod import expert_log_distributions, gate_features, gate_movement
from pathfuse.fusion.logitprod_converged import fit_converged
from pathfuse.plan import inner_folds_needed


def _tile_like_problem(n: int = 600, n_experts: int = 6, n_classes: int = 8, seed: int = 0) -> GateProblem:
    """Out-of-fold logits shaped like a real 8-class tile task.

    6 experts of very different quality, some over-confident, correlated through a shared noise term.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    shared = rng.normal(size=(n, n_classes))
    logits = np.stack([q * 3 * np.eye(n_classes)[y] + temp * (0.6 * shared + rng.normal(size=(n, n_classes)))
                       for q, temp in zip((1.2, 0.9, 0.7, 0.4, 0.2, 0.0), (1, 3, 1, 2, 1, 1), strict=True)], axis=1)
    log_p = expert_log_distributions(torch.as_tensor(logits, dtype=torch.float32), False)
    return GateProblem.build(gate_features(log_p).numpy(), log_p.numpy(), np.zeros((n_experts, n_experts)), 0.0,
                             label=y), log_p.numpy(), y


def test_converged_objective_is_at_most_the_best_experts_nll():
    problem, log_p, y = _tile_like_problem()
    best_expert_nll = min(float(-log_p[np.arange(len(y)), m, y].mean()) for m in range(log_p.shape[1]))
    params, objective, _ = fit_converged(problem, weight_decay=0.0)
    assert objective <= best_expert_nll + 1e-3
    assert objective == pytest.approx(loss_and_grad(problem, params)[0])


def test_converged_method_runs_and_chooses_its_grid_point_on_validation(tmp_path):
    task = TASK_OF_KIND["mutation"]
    fusion = {**fast_fusion_settings(), "logitprod_converged": {"corr_weights": [0.0, 0.1], "weight_decays": [0.0],
                                                                "max_iter": 200}}
    cfg = write_synthetic_task(tmp_path, SyntheticTask(task=task, n_samples=60, n_folds=2), fusion,
                               with_features=False)
    ctx = load_context(cfg, task)
    out = FUSERS.get("logitprod_converged").fit_fold(ctx, 0)
    assert len(out.cost["grid"]) == 2 and out.cost["uses_inner_experts"]
    assert out.cost["chosen"]["val_nll"] == min(g["val_nll"] for g in out.cost["grid"])
    assert out.logits[("test", False)].shape == (len(ctx.block(0, "test")), 2)
    assert out.cost["gate_kl_from_uniform"] > 0.01  # it moved, unlike a gate stuck at uniform


def test_gate_movement_is_zero_for_uniform_and_log_m_for_one_hot():
    uniform = np.full((5, 3), 1 / 3)
    assert gate_movement(uniform, 3) == pytest.approx({"gate_kl_from_uniform": 0.0, "gate_max_weight": 1 / 3})
    one_hot = np.tile([0.0, 1.0, 0.0], (5, 1))
    assert gate_movement(one_hot, 3) == pytest.approx({"gate_kl_from_uniform": np.log(3), "gate_max_weight": 1.0})


def test_inner_fold_experts_only_when_a_method_needs_oof_logits(tmp_path):
    task = TASK_OF_KIND["mutation"]
    spec = SyntheticTask(task=task, n_samples=20, n_folds=2)
    for methods, expected in ((["shazam", "best_val_expert", "mean_logits"], 0), (["stacking"], 5),
                              (["logitprod", "shazam"], 5), (["logitprod_converged"], 5)):
        cfg = write_synthetic_task(tmp_path / "_".join(methods), spec, {"methods": methods}, with_features=False)
        assert inner_folds_needed(cfg) == expected, methods


def test_non_finite_expert_logits_stop_fusion_naming_expert_fold_and_samples(tmp_path):
    from pathfuse.fusion.context import FusionInputError
    from pathfuse.io import read_parquet, write_parquet

    task = TASK_OF_KIND["mutation"]
    cfg = write_synthetic_task(tmp_path, SyntheticTask(task=task, n_samples=30, n_folds=2), with_features=False)
    path = cfg.layout.expert_predictions(task, "teacher1")
    df, meta = read_parquet(path, schema="predictions")
    row = df.index[(df["fold"] == 1) & (df["split"] == "test")][0]
    df.at[row, "logits"] = np.array([np.nan, 0.0], dtype=np.float32)
    write_parquet(df, path, schema="predictions", meta=meta)
    with pytest.raises(FusionInputError, match=rf"teacher1.*fold 1 split test.*{df.at[row, 'sample_id']}"):
        load_context(cfg, task)

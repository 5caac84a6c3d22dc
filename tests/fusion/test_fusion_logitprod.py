"""LogitProd: gate features, R, renormalisation, survival gradients, and the guarantee."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from support.synthetic import TASK_OF_KIND, SyntheticTask, fast_fusion_settings, write_synthetic_task

from pathfuse.fusion import FUSERS
from pathfuse.fusion.gate_training import GateParams, GateProblem, fused_log_q, loss_and_grad, nll
from pathfuse.fusion.gate_training import train as train_gate
from pathfuse.fusion.inputs import load_context
from pathfuse.fusion.logitprod import (
    LogitProdGate,
    LogitProdObjective,
    correlation_penalty_matrix,
    expert_log_distributions,
    gate_features,
    gate_inputs,
    gate_problem,
    output_logits,
    per_sample_nll,
    shrunk_psd_correlation,
)
from pathfuse.heads.losses import hazards_to_event_distribution
from pathfuse.io import read_parquet, write_parquet
from pathfuse.settings import GateSchedule


def _converged(kind: str) -> dict:
    """LogitProd trained long enough to reach its optimum (no early stop before it)."""
    settings = fast_fusion_settings()
    settings["logitprod"]["by_kind"][kind] = {"lr": 0.05, "max_epochs": 60, "patience": 60, "weight_decay": 0.0}
    return settings


def test_gate_features_are_3m_plus_2_from_logits_only():
    logits = torch.tensor([[[4.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])  # one confident, one uniform expert
    feats = gate_features(expert_log_distributions(logits, survival=False))
    assert feats.shape == (1, 3 * 2 + 2)
    p_conf = torch.softmax(logits[0, 0], -1)
    max_p, margin, ent = feats[0, 0:2], feats[0, 2:4], feats[0, 4:6]
    assert max_p[0] == pytest.approx(float(p_conf.max()))
    assert margin[1] == pytest.approx(0.0, abs=1e-6)  # uniform expert: no margin
    assert ent[1] == pytest.approx(np.log(3), rel=1e-5)
    assert feats[0, 6] == pytest.approx(float(ent.mean()), rel=1e-5)
    assert feats[0, 7] > 0  # the experts disagree: positive mutual information


def test_r_is_symmetric_nonnegative_with_zero_diagonal_and_built_from_a_psd_matrix():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(200, 1))
    nll = np.hstack([base + 0.1 * rng.normal(size=(200, 1)), base + 0.1 * rng.normal(size=(200, 1)),
                     -base + 0.1 * rng.normal(size=(200, 1)), rng.normal(size=(200, 1))])
    psd = shrunk_psd_correlation(nll, shrinkage=0.1)
    assert np.linalg.eigvalsh(psd).min() >= -1e-9
    r = correlation_penalty_matrix(nll, shrinkage=0.1)
    np.testing.assert_allclose(r, r.T, atol=1e-7)
    assert np.all(np.diag(r) == 0)
    assert r.min() >= 0
    assert r[0, 1] > 0.8  # correlated errors are penalised
    assert r[0, 2] == 0  # anti-correlated ones are clamped to zero, not rewarded


def test_constant_nll_expert_is_uncorrelated():
    nll = np.random.default_rng(1).normal(size=(50, 3))
    nll[:, 2] = 1.0
    r = correlation_penalty_matrix(nll)
    assert np.all(r[2] == 0) and np.all(r[:, 2] == 0) and np.isfinite(r).all()


@pytest.mark.parametrize("survival", [False, True])
def test_fused_distribution_is_renormalised(survival):
    torch.manual_seed(0)
    logits = torch.randn(32, 3, 4) * 3
    log_p = expert_log_distributions(logits, survival)
    gate = LogitProdGate(3, n_groups=5 if survival else 1)
    torch.nn.init.normal_(gate.net.weight)  # non-uniform weights: the sum alone would not be normalised
    log_q, w = gate(gate_features(log_p), log_p)
    torch.testing.assert_close(log_q.exp().sum(-1), torch.ones(32))
    torch.testing.assert_close(w.sum(-1), torch.ones_like(w.sum(-1)))
    if survival:  # back to hazards and forth again: the same distribution
        torch.testing.assert_close(hazards_to_event_distribution(output_logits(log_q, True), log=True), log_q,
                                   atol=1e-4, rtol=1e-4)


def test_survival_gates_receive_gradients_from_the_survival_loss():
    torch.manual_seed(0)
    logits = torch.randn(24, 3, 4) * 2
    log_p = expert_log_distributions(logits, survival=True)
    gate = LogitProdGate(3, n_groups=5)
    objective = LogitProdObjective(np.zeros((3, 3)), corr_weight=0.0, survival=True, alpha=0.4)
    targets = {"bin": torch.randint(0, 4, (24,)), "event": (torch.rand(24) < 0.6).float()}
    objective(*gate(gate_features(log_p), log_p), targets).backward()
    grad = gate.net.bias.grad.view(5, 3)
    assert torch.isfinite(grad).all()
    assert (grad.abs().sum(-1) > 1e-6).sum() >= 4  # (almost) every outcome's gate is trained
    assert gate.net.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(("survival", "hidden"), [(False, 0), (True, 0), (False, 6), (True, 6)])
def test_numpy_trainer_matches_autograd_on_the_torch_objective(survival, hidden):
    """The trainer's closed-form loss and gradient equal autograd's through the torch objective.

    For survival, autograd goes through the distribution → hazards conversion and the shared survival NLL.
    """
    torch.manual_seed(0)
    n, m = 20, 3
    log_p = expert_log_distributions(torch.randn(n, m, 4) * 2, survival).double()
    feats = gate_features(log_p)
    rng = np.random.default_rng(0)
    r = correlation_penalty_matrix(rng.normal(size=(50, m)) + rng.normal(size=(50, 1)))
    targets = ({"bin": torch.randint(0, 4, (n,)), "event": (torch.rand(n) < 0.6).float()} if survival
               else {"label": torch.randint(0, 4, (n,))})
    problem = GateProblem.build(feats.numpy(), log_p.numpy(), r, 0.1, alpha=0.4,
                                **({"bins": targets["bin"].numpy(), "event": targets["event"].numpy()} if survival
                                   else {"label": targets["label"].numpy()}))
    params = GateParams.initial(3 * m + 2, problem.n_groups * m, hidden, rng)
    params.layers[-1] = rng.normal(size=params.layers[-1].shape)  # away from the uniform start
    loss, grads = loss_and_grad(problem, params)

    gate = LogitProdGate(m, problem.n_groups, hidden).double().load(params)
    objective = LogitProdObjective(r, 0.1, survival, 0.4)
    objective.r = objective.r.double()
    reference = objective(*gate(feats, log_p), {k: v.double() if k == "event" else v for k, v in targets.items()})
    reference.backward()
    assert loss == pytest.approx(float(reference.detach()), rel=1e-9)
    linears = [mod for mod in gate.modules() if isinstance(mod, torch.nn.Linear)]
    for layer, grad in zip(linears, grads, strict=True):  # [in + 1, out], bias last
        np.testing.assert_allclose(grad[:-1], layer.weight.grad.numpy().T, rtol=1e-7, atol=1e-10)
        np.testing.assert_allclose(grad[-1], layer.bias.grad.numpy(), rtol=1e-7, atol=1e-10)


def test_guarantee_one_clear_best_expert(tmp_path):
    """End to end: the objective at convergence ≤ best expert's training NLL; most weight on it."""
    task = TASK_OF_KIND["wsi_classification"]
    synthetic = SyntheticTask(task=task, n_samples=60, n_folds=2, quality=(0.0, 1.5, 0.0, 0.0))
    cfg = write_synthetic_task(tmp_path, synthetic, _converged("wsi_classification"), with_features=False)
    ctx = load_context(cfg, task)
    for fold in ctx.folds:
        out = FUSERS.get("logitprod").fit_fold(ctx, fold)
        train = ctx.block(fold, "train", True)  # the gate trains on the out-of-fold logits
        expert_nll = per_sample_nll(expert_log_distributions(torch.as_tensor(train.logits), False), train,
                                    False, 0.4).mean(0)
        fused = torch.as_tensor(out.logits[("train", True)])
        w = torch.as_tensor(out.gate_weights[("train", True)])
        r = torch.as_tensor(out.cost["r_matrix"])
        objective = F.nll_loss(fused, torch.as_tensor(train.label)) + 0.1 * torch.einsum("nm,mk,nk->n", w, r, w).mean()
        assert float(objective) <= float(expert_nll.min()) + 0.02
        assert int(expert_nll.argmin()) == 1
        assert float(w[:, 1].mean()) > 0.5


def test_guarantee_survival_objective(tmp_path):
    """Survival: the per-outcome gates reach an objective ≤ the best expert's NLL on the same rows.

    End to end, survival stops on the validation c-index, which may stop before the optimum;
    the guarantee is about the optimum of the training objective, so this trains to convergence.
    """
    task = TASK_OF_KIND["survival"]
    cfg = write_synthetic_task(tmp_path, SyntheticTask(task=task, n_samples=80, n_folds=2, quality=(0.0, 1.5, 0.0)),
                               with_features=False)
    train = load_context(cfg, task).block(0, "train", True)
    expert_nll = per_sample_nll(gate_inputs(train, True)["log_p"], train, True, 0.4)
    r = correlation_penalty_matrix(expert_nll.numpy().astype(np.float64))
    problem = gate_problem(train, True, r, 0.1, 0.4)

    def objective(params):
        loss, _ = loss_and_grad(problem, params)
        return loss

    fit = train_gate(problem, GateSchedule(lr=0.05, weight_decay=0.0, max_epochs=80, patience=80), 16, seed=0,
                     hidden=0, monitor=("objective", "min", objective), fallback=("objective", "min", objective))
    assert fit.best_value <= float(expert_nll.mean(0).min()) + 0.02
    assert int(expert_nll.mean(0).argmin()) == 1
    # (Per-outcome gates may legitimately mix experts on outcomes where they agree, so only the
    # objective is asserted here.)


def _complementary(cfg, task: str) -> None:
    """Rewrite two experts so that each is informative on one half of the samples only."""
    for m, enc in enumerate(cfg.task(task).encoders):
        path = cfg.layout.expert_predictions(task, enc)
        df, meta = read_parquet(path, schema="predictions")
        rng = np.random.default_rng(m)
        half = df["sample_id"].str[-1].astype(int) % 2 == m
        logits = []
        for label, own in zip(df["label"], half, strict=True):
            z = rng.normal(scale=0.3, size=3)
            if own:
                z[label] += 4.0
            logits.append(z.astype(np.float32))
        df["logits"] = logits
        write_parquet(df, path, schema="predictions", meta=meta)


def test_two_complementary_experts_are_beaten(tmp_path):
    task = TASK_OF_KIND["wsi_classification"]
    cfg = write_synthetic_task(tmp_path, SyntheticTask(task=task, n_samples=120, n_folds=2, quality=(1.0, 1.0),
                                                        dims=(8, 8)), _converged("wsi_classification"),
                               with_features=False)
    _complementary(cfg, task)
    ctx = load_context(cfg, task)
    fused_nll, expert_nll = [], []
    for fold in ctx.folds:
        out = FUSERS.get("logitprod").fit_fold(ctx, fold)
        test = ctx.block(fold, "test")
        y = torch.as_tensor(test.label)
        fused_nll.append(float(F.nll_loss(torch.as_tensor(out.logits[("test", False)]), y)))
        expert_nll.append(per_sample_nll(expert_log_distributions(torch.as_tensor(test.logits), False), test,
                                         False, 0.4).mean(0).numpy())
    assert np.mean(fused_nll) < np.mean(expert_nll, axis=0).min() - 0.1


def test_trains_on_out_of_fold_logits_by_default(tmp_path):
    """Changing the experts' in-sample training logits does not change the gate (oof mode)."""
    task = TASK_OF_KIND["mutation"]
    spec = SyntheticTask(task=task, n_samples=45, n_folds=3)
    outputs = []
    for variant in ("clean", "corrupted"):
        cfg = write_synthetic_task(tmp_path / variant, spec, fast_fusion_settings(), with_features=False)
        if variant == "corrupted":
            for enc in cfg.task(task).encoders:
                path = cfg.layout.expert_predictions(task, enc)
                df, meta = read_parquet(path, schema="predictions")
                rows = (df["split"] == "train") & ~df["oof"]
                df.loc[rows, "logits"] = pd.Series([np.zeros(2, np.float32)] * int(rows.sum()), index=df.index[rows])
                write_parquet(df, path, schema="predictions", meta=meta)
        ctx = load_context(cfg, task)
        outputs.append(FUSERS.get("logitprod").fit_fold(ctx, 0).logits[("test", False)])
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_mlp_gate_starts_uniform_and_learns():
    torch.manual_seed(0)
    logits = torch.randn(64, 3, 4)
    log_p = expert_log_distributions(logits, survival=False)
    feats = gate_features(log_p)
    rng = np.random.default_rng(0)
    params = GateParams.initial(11, 3, hidden=8, rng=rng)
    _, w = LogitProdGate(3, hidden=8).load(params)(feats, log_p)
    torch.testing.assert_close(w, torch.full_like(w, 1 / 3))
    label = logits[:, 0].argmax(-1).numpy()  # expert 0 is always right
    problem = GateProblem.build(feats.numpy(), log_p.numpy(), np.zeros((3, 3)), 0.1, label=label)
    val = ("nll", "min", lambda p: nll(problem, fused_log_q(problem, p)))
    fit = train_gate(problem, GateSchedule(lr=0.05, weight_decay=0.0, max_epochs=40, patience=40), 16, seed=0,
                     hidden=8, monitor=val, fallback=val)
    with torch.no_grad():
        assert float(LogitProdGate(3, hidden=8).load(fit.params)(feats, log_p)[1][..., 0].mean()) > 0.6

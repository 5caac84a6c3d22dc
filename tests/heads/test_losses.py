"""Losses and the discrete-time survival algebra (hand-computed values, inverses, gradients)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pathfuse.heads.losses import (
    assign_bins,
    balanced_class_weights,
    cross_entropy,
    event_distribution_to_hazards,
    hazards_to_event_distribution,
    survival_nll,
    survival_risk,
    time_bins,
)


def test_survival_nll_matches_hand_computed_value():
    # hazards 0.5 and 0.75 → S_0 = 0.5, S_1 = 0.125
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])
    bins, events = torch.tensor([1, 0]), torch.tensor([1, 0])
    uncensored = -(math.log(0.5) + math.log(0.75))  # survived bin 0, event in bin 1
    censored = -math.log(0.5)  # survived through bin 0
    alpha = 0.4
    expected = ((1 - alpha) * uncensored + alpha * uncensored + (1 - alpha) * censored) / 2
    assert survival_nll(logits, bins, events, alpha=alpha).item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.6983587, abs=1e-6)


def test_survival_nll_equals_the_published_probability_form():
    """Same value as the clamped probability-space formula of PORPOISE/MCAT on random inputs."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 4, generator=g, dtype=torch.float64)
    bins = torch.randint(0, 4, (64,), generator=g)
    events = torch.randint(0, 2, (64,), generator=g)
    h = torch.sigmoid(logits)
    s = torch.cat([torch.ones(64, 1, dtype=torch.float64), torch.cumprod(1 - h, dim=1)], dim=1)
    y, c = bins.unsqueeze(1), (1 - events).unsqueeze(1).double()
    unc = -(1 - c) * (torch.log(s.gather(1, y)) + torch.log(h.gather(1, y)))
    cen = -c * torch.log(s.gather(1, y + 1))
    published = ((1 - 0.4) * (unc + cen) + 0.4 * unc).mean()
    assert survival_nll(logits, bins, events, alpha=0.4).item() == pytest.approx(published.item(), rel=1e-9)


def test_event_distribution_is_normalised_and_inverts_to_the_hazards():
    logits = torch.randn(5, 4, dtype=torch.float64)
    dist = hazards_to_event_distribution(logits)
    assert dist.shape == (5, 5)
    assert torch.allclose(dist.sum(-1), torch.ones(5, dtype=torch.float64))
    h = torch.sigmoid(logits[0])
    assert dist[0, 1].item() == pytest.approx(((1 - h[0]) * h[1]).item())
    assert dist[0, 4].item() == pytest.approx(torch.prod(1 - h).item())
    assert torch.allclose(event_distribution_to_hazards(dist), logits)
    log_dist = hazards_to_event_distribution(logits, log=True)
    assert torch.allclose(event_distribution_to_hazards(log_dist + 3.0, log=True), logits)  # scale-free


def test_survival_conversions_are_differentiable():
    logits = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: hazards_to_event_distribution(z, log=True), (logits,))
    log_p = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: event_distribution_to_hazards(p, log=True), (log_p,))


def test_survival_risk_is_minus_the_summed_survival():
    logits = torch.tensor([[0.0, 0.0]])  # S = 0.5, 0.25
    assert survival_risk(logits).item() == pytest.approx(-0.75)
    assert survival_risk(torch.tensor([[2.0, 2.0]])).item() > survival_risk(logits).item()


def test_time_bins_use_quartiles_of_uncensored_times_only():
    times = np.array([1, 2, 3, 4, 5, 100, 200, 300], dtype=float)
    events = np.array([1, 1, 1, 1, 1, 0, 0, 0])
    edges = time_bins(times, events, 4)
    assert np.allclose(edges[1:-1], np.quantile([1, 2, 3, 4, 5], [0.25, 0.5, 0.75]))
    assert edges[0] == 0 and edges[-1] == 300
    assert assign_bins(np.array([0.5, 2.0, 2.5, 4.0, 1e6]), edges).tolist() == [0, 1, 1, 3, 3]
    with pytest.raises(ValueError, match="no observed event"):
        time_bins(times, np.zeros(8), 4)


def test_cross_entropy_class_weights():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    target = torch.tensor([0, 1, 1])
    weights = balanced_class_weights(target.numpy(), 2)
    assert weights.tolist() == pytest.approx([1.5, 0.75])
    per_sample = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    expected = (per_sample * weights[target]).sum() / weights[target].sum()
    assert cross_entropy(logits, target, weights).item() == pytest.approx(expected.item())
    assert cross_entropy(logits, target).item() == pytest.approx(per_sample.mean().item())
    assert balanced_class_weights(np.array([0, 0]), 3).tolist() == pytest.approx(
        [2 / (3 * 2), 0.0, 0.0]
    )  # n / (C n_c)


def test_objectives_bin_times_with_the_folds_edges_and_pick_the_loss():
    import pandas as pd

    from pathfuse.heads.objectives import Objective, monitor_fn

    samples = pd.DataFrame({"label": [-1, -1, -1], "time": [1.0, 5.0, 50.0], "event": [1, 0, 1]})
    objective = Objective("survival", np.array([0.0, 2.0, 4.0, 8.0, 60.0]))
    targets = objective.targets(samples)
    assert targets["bin"].tolist() == [0, 2, 3] and targets["event"].tolist() == [1, 0, 1]
    logits = torch.randn(3, 4)
    batch = {k: torch.as_tensor(v) for k, v in targets.items()}
    assert objective.loss(0.4)(logits, batch).item() == pytest.approx(
        survival_nll(logits, batch["bin"], batch["event"], 0.4).item()
    )
    assert Objective("mutation").targets(samples.assign(label=[0, 1, 1]))["label"].tolist() == [0, 1, 1]
    risk_order = torch.tensor([[3.0] * 4, [0.0] * 4, [-3.0] * 4])  # high hazard = early event
    assert monitor_fn("c_index", "survival")(risk_order, batch) == 1.0
    with pytest.raises(KeyError, match="unknown validation monitor"):
        monitor_fn("f1", "survival")

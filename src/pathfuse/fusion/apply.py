"""Fitted fusion models applied to expert logits they never saw: one function per kind of model.

A method's fold function returns, besides its predictions, what it keeps of the fitted fold
(``FoldOutput.model``: JSON-able numbers). The functions here turn that record and the experts'
logits of new rows [N, M, K] into fused logits [N, K] (and gate weights for LogitProd), so an
external cohort or ``pathfuse predict`` reuses the very model the benchmark scored, without
refitting anything. The fold functions predict their own blocks through the same functions, so
the two paths cannot drift apart.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from pathfuse.config import TaskSpec
from pathfuse.fusion.logitprod import LogitProdGate, expert_log_distributions, gate_features, output_logits

Applied = tuple[np.ndarray, np.ndarray | None]


def mean_logits(task: TaskSpec, model: dict[str, Any], logits: np.ndarray) -> Applied:
    """The mean of the experts' logits (class logits, or hazard logits)."""
    return np.asarray(logits, dtype=np.float32).mean(1), None


def mean_probs(task: TaskSpec, model: dict[str, Any], logits: np.ndarray) -> Applied:
    """The mean of the experts' distributions, as log-probabilities or hazard logits."""
    rules = task.kind_strategy.training()
    z = torch.as_tensor(np.asarray(logits, dtype=np.float32))
    log_mean = torch.logsumexp(rules.log_distribution(z), dim=1) - math.log(z.shape[1])
    return rules.output_logits(log_mean).numpy(), None


def chosen_expert(task: TaskSpec, model: dict[str, Any], logits: np.ndarray) -> Applied:
    """The one expert the fold chose (``model["expert"]``: its index), unchanged."""
    return np.asarray(logits, dtype=np.float32)[:, int(model["expert"])], None


def stack_features(logits: np.ndarray, survival: bool) -> np.ndarray:
    """The stacker's inputs [N, M·K]: the experts' log-probabilities, or raw hazard logits (survival)."""
    z = torch.as_tensor(np.asarray(logits, dtype=np.float32))
    out = z if survival else expert_log_distributions(z, False)
    return out.reshape(len(z), -1).numpy().astype(np.float64)


def stacking(task: TaskSpec, model: dict[str, Any], logits: np.ndarray) -> Applied:
    """A fitted linear stacker: standardised features → class log-probabilities or hazard logits.

    ``model``: ``mean``/``scale`` (the scaler), ``form`` — ``constant`` (one class in training:
    ``out`` for every row), ``logistic`` (sklearn's coefficients, ``classes`` present in training;
    the others get log-probability −30) or ``linear`` (survival: weight [T, M·K], bias [T]).
    """
    x = (stack_features(logits, model["survival"]) - np.asarray(model["mean"])) / np.asarray(model["scale"])
    if model["form"] == "constant":
        return np.repeat(np.asarray(model["out"], dtype=np.float32)[None], len(x), 0), None
    scores = x @ np.asarray(model["weight"]).T + np.asarray(model["bias"])
    if model["form"] == "linear":
        return scores.astype(np.float32), None
    # sklearn's LogisticRegression: one column is the binary log-odds of classes_[1]; else a softmax.
    log_p = (np.stack([-np.logaddexp(0, scores[:, 0]), -np.logaddexp(0, -scores[:, 0])], 1) if scores.shape[1] == 1
             else scores - np.logaddexp.reduce(scores, axis=1, keepdims=True))
    out = np.full((len(x), int(model["n_classes"])), -30.0)
    out[:, np.asarray(model["classes"], dtype=np.int64)] = log_p
    return out.astype(np.float32), None


def gate_model(layers: list[np.ndarray], n_experts: int) -> LogitProdGate:
    """The LogitProd gate of a fold from its weight matrices ([in + 1, out] per layer, bias last)."""
    hidden = layers[0].shape[1] if len(layers) > 1 else 0
    from pathfuse.fusion.gate_training import GateParams

    gate = LogitProdGate(n_experts, layers[-1].shape[1] // n_experts, hidden)
    return gate.load(GateParams([np.asarray(m, dtype=np.float64) for m in layers])).eval()


def gate(task: TaskSpec, model: dict[str, Any], logits: np.ndarray) -> Applied:
    """LogitProd: the fold's gate weighs the experts' log-distributions per sample; returns its weights too."""
    survival = task.kind_strategy.time_to_event
    z = torch.as_tensor(np.asarray(logits, dtype=np.float32))
    net = gate_model([np.asarray(m) for m in model["layers"]], z.shape[1])
    with torch.no_grad():
        log_p = expert_log_distributions(z, survival)
        log_q, w = net(gate_features(log_p), log_p)
        return output_logits(log_q, survival).numpy(), w.flatten(1).numpy()


def gate_record(net: LogitProdGate) -> dict[str, Any]:
    """What a fitted gate keeps (``FoldOutput.model``): its layers in the trainer's [in + 1, out] layout."""
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    return {"layers": [np.vstack([m.weight.detach().numpy().T, m.bias.detach().numpy()[None]]).tolist()
                       for m in linears]}

"""Training of the LogitProd gate: the objective's gradient in closed form, Adam, early stopping.

Why not autograd and :func:`pathfuse.training.fit`: the gate has (3M+3)·G·M parameters and a
batch of 16 samples, so a PyTorch step is ~50 dispatched operations on tensors of a few dozen
numbers, and the framework overhead (autograd graph, optimizer objects, per-batch dicts) is
~15× the arithmetic. The published schedule runs up to 600 epochs of such steps; LogitProd's
whole point is being cheap, so its trainer computes the exact gradient in NumPy instead. The
objective is the one of :class:`pathfuse.fusion.logitprod.LogitProdObjective`, including the
survival likelihood *through* the hazard↔distribution conversions; tests/fusion/test_fusion_logitprod.py
checks loss and gradients against autograd on that torch objective.

Every task kind is one "set likelihood": sample n has a weight a_n and a set A_n of outcomes of
the fused distribution q_n, and its loss is −a_n·log Σ_{k∈A_n} q_{n,k}:

* classification: A = {label}, a = 1;
* survival, event observed in bin y: A = {y} (= −log S_{y−1} − log h_y), a = 1;
* survival, censored in bin y: A = {y+1, …, T} (= −log S_y), a = 1 − α.

(This is exactly the discrete-time NLL with its α weighting.) With u = Σ_m w_m log p_m and
q = softmax(u), ∂loss/∂u = a·(q − q·1_A / Σ_A q).

Layers are stored as one matrix [in + 1, out] whose last row is the bias, and the gate features
carry a constant 1 column, so the first layer is one matrix product and Adam updates one array
per layer.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from pathfuse import progress
from pathfuse.settings import GateSchedule

_ADAM_BETAS, _ADAM_EPS = (0.9, 0.999), 1e-8


@dataclass
class GateProblem:
    """The LogitProd objective on fixed rows.

    Attributes:
        features: [N, 3M+3] gate features with a trailing column of ones (the bias input).
        log_p_t: [N, K, M] the experts' log-distributions, outcome-major.
        outcome_sets: [N, K] bool, the set A_n of each sample's likelihood.
        sample_weight: [N] a_n.
        r: [M, M] penalty matrix; corr_weight: λ; n_groups: 1 or K (one gate per outcome).
    """

    features: np.ndarray
    log_p_t: np.ndarray
    outcome_sets: np.ndarray
    sample_weight: np.ndarray
    r: np.ndarray
    corr_weight: float
    n_groups: int

    @classmethod
    def build(cls, features: np.ndarray, log_p: np.ndarray, r: np.ndarray, corr_weight: float, *,
              label: np.ndarray | None = None, bins: np.ndarray | None = None, event: np.ndarray | None = None,
              alpha: float = 0.4) -> GateProblem:
        """Gate features [N, 3M+2], log-distributions [N, M, K] and targets → a problem.

        The targets are a classification ``label`` or survival ``bins`` and ``event``.
        """
        n, _, k = log_p.shape
        feats = np.hstack([np.asarray(features, dtype=np.float64), np.ones((n, 1))])
        log_p_t = np.ascontiguousarray(np.asarray(log_p, dtype=np.float64).transpose(0, 2, 1))
        rows = np.arange(n)
        sets = np.zeros((n, k), dtype=bool)
        r = np.asarray(r, dtype=np.float64)
        if label is not None:
            sets[rows, label] = True
            return cls(feats, log_p_t, sets, np.ones(n), r, corr_weight, n_groups=1)
        observed = np.asarray(event).astype(bool)
        sets[rows[observed], np.asarray(bins)[observed]] = True
        sets[~observed] = np.arange(k)[None, :] > np.asarray(bins)[~observed, None]
        return cls(feats, log_p_t, sets, np.where(observed, 1.0, 1.0 - alpha), r, corr_weight, n_groups=k)

    def __len__(self) -> int:
        return len(self.features)

    def take(self, order: np.ndarray) -> GateProblem:
        """The rows in ``order`` (one copy per epoch; batches are then cheap slices)."""
        return dataclasses.replace(self, features=self.features[order], log_p_t=self.log_p_t[order],
                                   outcome_sets=self.outcome_sets[order], sample_weight=self.sample_weight[order])


@dataclass
class GateParams:
    """Gate weights: one [in + 1, out] matrix per layer (last row = bias); ReLU between layers."""

    layers: list[np.ndarray]

    @classmethod
    def initial(cls, n_in: int, n_out: int, hidden: int, rng: np.random.Generator) -> GateParams:
        """Zero output layer (uniform weights at the start); a hidden layer gets torch's default init.

        ``n_in`` counts the gate features without the bias column.
        """
        if not hidden:
            return cls([np.zeros((n_in + 1, n_out))])
        bound = 1.0 / math.sqrt(n_in)
        return cls([rng.uniform(-bound, bound, (n_in + 1, hidden)), np.zeros((hidden + 1, n_out))])

    def copy(self) -> GateParams:
        """An independent copy (training updates the layers in place; the best state must not move)."""
        return GateParams([layer.copy() for layer in self.layers])


def gate_weights(problem: GateProblem, params: GateParams, rows: Any = slice(None)) -> tuple[np.ndarray, list]:
    """Softmax gate weights [n, G, M] and the hidden pre-activations the backward pass needs."""
    h = problem.features[rows] @ params.layers[0]
    hidden = []
    for layer in params.layers[1:]:
        hidden.append(h)
        h = np.maximum(h, 0.0) @ layer[:-1] + layer[-1]
    scores = h.reshape(len(h), problem.n_groups, -1)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    return weights / weights.sum(-1, keepdims=True), hidden


def fused_log_q(problem: GateProblem, params: GateParams, rows: Any = slice(None)) -> np.ndarray:
    """The renormalised fused log-distribution [n, K]."""
    w, _ = gate_weights(problem, params, rows)
    return _log_softmax((w * problem.log_p_t[rows]).sum(-1))


def _log_softmax(u: np.ndarray) -> np.ndarray:
    top = u.max(-1, keepdims=True)
    return u - top - np.log(np.exp(u - top).sum(-1, keepdims=True))


def _log_mass(log_q: np.ndarray, sets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log Σ_{k∈A} q_k [n], log q restricted to A, −inf elsewhere [n, K])."""
    in_set = np.where(sets, log_q, -np.inf)
    top = in_set.max(-1, keepdims=True)
    return top[:, 0] + np.log(np.exp(in_set - top).sum(-1)), in_set


def nll(problem: GateProblem, log_q: np.ndarray, rows: Any = slice(None)) -> float:
    """Mean set-likelihood NLL of a fused log-distribution (the task loss, no penalty)."""
    log_mass, _ = _log_mass(log_q, problem.outcome_sets[rows])
    return float(np.mean(-problem.sample_weight[rows] * log_mass))


def loss_and_grad(
    problem: GateProblem, params: GateParams, rows: Any = slice(None), with_loss: bool = True,
) -> tuple[float, list]:
    """Objective (NLL + λ·mean wᵀRw) on ``rows`` and its gradient, one array per layer.

    ``with_loss=False`` skips the objective's value (NaN is returned): training steps only
    need the gradient.
    """
    w, hidden = gate_weights(problem, params, rows)
    log_p_t, a, sets = problem.log_p_t[rows], problem.sample_weight[rows], problem.outcome_sets[rows]
    n, groups = len(w), problem.n_groups
    u = (w * log_p_t).sum(-1)  # w [n, G, M] broadcasts over K when G = 1
    e = np.exp(u - u.max(-1, keepdims=True))
    in_set = e * sets
    # Mass of A relative to the row's largest outcome; floored so that an underflowing set
    # (log-odds below −700) gives the limit gradient instead of NaN.
    set_mass = np.maximum(in_set.sum(-1, keepdims=True), np.finfo(np.float64).tiny)
    rw = w @ problem.r
    loss = math.nan
    if with_loss:
        log_mass = np.log(set_mass[:, 0]) - np.log(e.sum(-1))
        loss = float(np.mean(-a * log_mass)) + problem.corr_weight * float((rw * w).sum(-1).mean())
    # ∂/∂u of −a·log Σ_A q: a·(q − q restricted to A and renormalised).
    grad_u = (a / n)[:, None] * (e / e.sum(-1, keepdims=True) - in_set / set_mass)
    grad_w = grad_u[:, :, None] * log_p_t  # [n, K, M]: outcome k's share of its group's weights
    if groups == 1:
        grad_w = grad_w.sum(1, keepdims=True)
    grad_w += (2.0 * problem.corr_weight / (n * groups)) * rw
    upstream = (w * (grad_w - (w * grad_w).sum(-1, keepdims=True))).reshape(n, -1)
    grads = []
    for i in range(len(params.layers) - 1, 0, -1):
        active = np.maximum(hidden[i - 1], 0.0)
        grads.append(np.vstack([active.T @ upstream, upstream.sum(0)]))
        upstream = (upstream @ params.layers[i][:-1].T) * (hidden[i - 1] > 0)
    grads.append(problem.features[rows].T @ upstream)
    return loss, grads[::-1]


@dataclass
class GateFit:
    """The chosen parameters and how training went."""

    params: GateParams
    best_epoch: int
    best_value: float
    epochs_run: int
    monitor: str


Monitor = tuple[str, str, Callable[[GateParams], float]]


class _Best:
    """The best monitored value so far and the parameters that reached it (first best wins)."""

    def __init__(self, monitor: Monitor, params: GateParams) -> None:
        self.name, mode, self.score = monitor
        self.sign = 1.0 if mode == "min" else -1.0
        self.params, self.value, self.epoch, self.last = params.copy(), math.nan, -1, math.nan

    def offer(self, params: GateParams, epoch: int) -> bool:
        value = self.last = self.score(params)
        if math.isnan(value) or (not math.isnan(self.value) and self.sign * value >= self.sign * self.value):
            return False
        self.params, self.value, self.epoch = params.copy(), value, epoch
        return True


def train(
    problem: GateProblem, schedule: GateSchedule, batch_size: int, seed: int, hidden: int,
    monitor: Monitor | None, fallback: Monitor | None,
) -> GateFit:
    """Adam (the update of torch.optim.Adam, L2 weight decay) with early stopping on ``monitor``.

    Args:
        problem: the training rows.
        schedule: ``lr``, ``weight_decay``, ``max_epochs``, ``patience`` (stop after this many
            epochs without strict improvement; the first best state is kept), as
            ``fusion.logitprod.by_kind.<kind>`` gives them.
        batch_size: rows per Adam step (minibatches of a fresh shuffle each epoch).
        seed: seeds the initial weights and the shuffles.
        hidden: width of the gate's hidden layer; 0 = a linear gate.
        monitor: (name, "min" | "max", params → value on the VALIDATION rows); None: no
            early stopping, the state after ``max_epochs`` epochs is kept (``train_on: val``,
            whose epoch count an inner k-fold chose, :mod:`pathfuse.fusion.val_selection`).
        fallback: the monitor that chooses the state if ``monitor`` is undefined (NaN) at every
            epoch, e.g. a c-index on a validation split without events (as
            :func:`pathfuse.training.fit` does).
    """
    final: Monitor = ("fixed_epochs", "max", lambda params: float(best.epoch + 1))  # every epoch improves
    monitor, fallback = monitor or final, fallback or monitor or final
    rng = np.random.default_rng(seed)
    n_in, n_experts = problem.features.shape[1] - 1, problem.log_p_t.shape[2]
    params = GateParams.initial(n_in, problem.n_groups * n_experts, hidden, rng)
    first = [np.zeros_like(layer) for layer in params.layers]
    second = [np.zeros_like(layer) for layer in params.layers]
    lr, decay = schedule.lr, schedule.weight_decay
    (beta1, beta2), step = _ADAM_BETAS, 0
    best = _Best(monitor, params)
    best_fallback = None if fallback is monitor else _Best(fallback, params)
    stale, epoch = 0, -1
    with progress.scope("gate training", schedule.max_epochs, bound=True) as report:
        for epoch in range(schedule.max_epochs):
            shuffled = problem.take(rng.permutation(len(problem)))
            for start in range(0, len(shuffled), batch_size):
                _, grads = loss_and_grad(shuffled, params, slice(start, start + batch_size), with_loss=False)
                step += 1
                step_size, root_correction = lr / (1 - beta1**step), math.sqrt(1 - beta2**step)
                for layer, grad, m, v in zip(params.layers, grads, first, second, strict=True):
                    if decay:
                        grad += decay * layer
                    m *= beta1
                    m += (1 - beta1) * grad
                    v *= beta2
                    v += (1 - beta2) * grad * grad
                    layer -= step_size * m / (np.sqrt(v) / root_correction + _ADAM_EPS)
            if best_fallback is not None:
                best_fallback.offer(params, epoch)
            stale = 0 if best.offer(params, epoch) else stale + 1
            report.advance(**{"epoch": f"{epoch + 1}/{schedule.max_epochs}", f"val_{best.name}": best.last,
                              "best": f"{best.value:.4g} @ epoch {best.epoch + 1}"})
            if stale > schedule.patience:
                break
    chosen = best if best.epoch >= 0 or best_fallback is None else best_fallback
    return GateFit(params=chosen.params, best_epoch=chosen.epoch, best_value=chosen.value, epochs_run=epoch + 1,
                   monitor=chosen.name)

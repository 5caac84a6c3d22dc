"""LogitProd: a learned, per-sample weighted product of the frozen experts' distributions.

Formulation (METHODS.md §3; docs/methods.md states every deviation from the published code):

* Each expert m gives a distribution p_m over K outcomes: softmax of its class logits, or for
  survival the event distribution over T+1 outcomes (event in bin 0..T-1, or survival past the
  last bin) from its T hazard logits.
* The gate reads only these distributions: per expert the max probability, the top-1 − top-2
  margin and the entropy, plus the mean entropy and the mutual information
  H(mean_m p_m) − mean_m H(p_m) (3M+2 numbers). A zero-initialised Linear(3M+2 → G·M) and a
  softmax over experts give weights w(x) on the simplex (G = 1, or one gate per survival
  outcome, G = T+1), uniform at the start.
* Fused log-distribution: log q = log_softmax(Σ_m w_m log p_m) — always renormalised (the
  published mutation script fed the unnormalised sum to its loss **[anchor defect]**).
* Loss: the task NLL of q (cross-entropy; or, for survival, q → hazards → discrete-time NLL,
  with gradients through both conversions, which the published code ran under no-grad
  **[anchor defect]**) + λ·mean(wᵀRw), R from the experts' NLL correlations on the rows the gate
  learns from (``train_on``: out-of-fold, validation or in-sample training logits).

One-hot weights reproduce any single expert exactly and have zero penalty (R has a zero
diagonal), so the optimum of the training objective is never worse than the best expert's
training NLL — the guarantee tests/fusion/test_fusion_logitprod.py checks. Fitting one outer
fold (which rows, model choice, cost record) is :mod:`pathfuse.fusion.logitprod_fold`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pathfuse.fusion import BlockKey
from pathfuse.fusion.blocks import Block
from pathfuse.fusion.context import FusionContext
from pathfuse.fusion.gate_training import GateParams, GateProblem
from pathfuse.heads.losses import event_distribution_to_hazards, hazards_to_event_distribution, survival_nll
from pathfuse.settings import GateSchedule, LogitProdSettings
from pathfuse.settings.base import per_kind


# ----------------------------------------------------------------------------- distributions
def expert_log_distributions(logits: torch.Tensor, survival: bool) -> torch.Tensor:
    """Experts' logits [N, M, K] → log-distributions [N, M, K'] (K' = K, or T+1 for survival)."""
    if survival:
        return hazards_to_event_distribution(logits, log=True)
    return F.log_softmax(logits, dim=-1)


def output_logits(log_q: torch.Tensor, survival: bool) -> torch.Tensor:
    """A fused log-distribution → contract logits (normalised log-probs, or T hazard logits)."""
    return event_distribution_to_hazards(log_q, log=True) if survival else log_q


def entropy(log_p: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) over the last axis; 0·log 0 counts as 0."""
    p = log_p.exp()
    return -torch.where(p > 0, p * log_p, torch.zeros_like(p)).sum(-1)


def gate_features(log_p: torch.Tensor) -> torch.Tensor:
    """The gate's 3M+2 inputs from the experts' log-distributions [N, M, K'].

    Order: max probability of experts 1..M, their top-1 − top-2 margins, their entropies,
    then the mean entropy and the mutual information (the experts' disagreement).
    """
    p = log_p.exp()
    top2 = p.topk(2, dim=-1).values
    ent = entropy(log_p)
    mean_ent = ent.mean(-1, keepdim=True)
    mean_p = p.mean(1).clamp_min(torch.finfo(p.dtype).tiny)
    mutual_info = entropy(mean_p.log()).unsqueeze(-1) - mean_ent
    return torch.cat([top2[..., 0], top2[..., 0] - top2[..., 1], ent, mean_ent, mutual_info], dim=-1)


def per_sample_nll(log_p: torch.Tensor, block: Block, survival: bool, alpha: float) -> torch.Tensor:
    """Each expert's loss on each sample [N, M]: the samples' NLLs whose correlation gives R."""
    n, m = log_p.shape[:2]
    if not survival:
        y = torch.as_tensor(block.label, dtype=torch.long)
        return -log_p.gather(2, y.view(n, 1, 1).expand(n, m, 1)).squeeze(-1)
    hazards = event_distribution_to_hazards(log_p, log=True)  # [N, M, T]
    bins = torch.as_tensor(block.bin_index, dtype=torch.long)
    event = torch.as_tensor(block.event, dtype=torch.float32)
    one = torch.func.vmap(lambda z, y, e: survival_nll(z.unsqueeze(0), y.unsqueeze(0), e.unsqueeze(0), alpha))
    return torch.stack([one(hazards[:, j], bins, event) for j in range(m)], dim=1)


# ----------------------------------------------------------------------------- R
def project_psd(matrix: np.ndarray) -> np.ndarray:
    """Nearest symmetric positive semi-definite matrix (eigenvalues clipped at 0)."""
    sym = (matrix + matrix.T) / 2
    values, vectors = np.linalg.eigh(sym)
    out = (vectors * np.clip(values, 0, None)) @ vectors.T
    return (out + out.T) / 2


def shrunk_psd_correlation(nll: np.ndarray, shrinkage: float) -> np.ndarray:
    """Correlation of the experts' per-sample NLLs [N, M], shrunk toward its diagonal mean, PSD.

    An expert whose NLL does not vary is uncorrelated with every other (its correlation is
    undefined; 0 is the value that neither rewards nor penalises combining it).
    """
    m = nll.shape[1]
    if nll.shape[0] < 3:
        return np.eye(m)
    std = nll.std(axis=0)
    centred = (nll - nll.mean(axis=0)) / np.where(std > 0, std, 1.0)
    corr = centred.T @ centred / nll.shape[0]
    corr[std == 0, :] = 0.0
    corr[:, std == 0] = 0.0
    np.fill_diagonal(corr, 1.0)
    shrunk = (1 - shrinkage) * corr + shrinkage * np.mean(np.diag(corr)) * np.eye(m)
    return project_psd(shrunk)


def correlation_penalty_matrix(nll: np.ndarray, shrinkage: float = 0.1) -> np.ndarray:
    """R of the penalty wᵀRw: the shrunk PSD correlation, clamped ≥ 0, diagonal zeroed.

    Zeroing the diagonal means a one-hot weight vector (a single expert) costs nothing, so the
    penalty only discourages spreading weight over experts whose errors are correlated.
    (The result is symmetric and non-negative but, having a zero trace, no longer PSD unless
    it is 0; the PSD projection is what keeps the correlation estimate consistent first.)
    """
    r = np.clip(shrunk_psd_correlation(nll, shrinkage), 0.0, None)
    np.fill_diagonal(r, 0.0)
    return r.astype(np.float32)


def penalty_matrix(block: Block, survival: bool, alpha: float, shrinkage: float) -> np.ndarray:
    """R from the experts' per-sample NLLs on ``block``: the rows the gate learns from (its ``train_on``)."""
    nll = per_sample_nll(gate_inputs(block, survival)["log_p"], block, survival, alpha)
    return correlation_penalty_matrix(nll.numpy().astype(np.float64), shrinkage)


# ----------------------------------------------------------------------------- model
class LogitProdGate(nn.Module):
    """Gate + weighted product: (gate features, expert log-distributions) → (log q, weights).

    Args:
        n_experts: M.
        n_groups: 1 (one weight vector per sample), or T+1 (one per survival outcome).
        hidden: 0 for the published Linear gate; > 0 for a small MLP.
    """

    def __init__(self, n_experts: int, n_groups: int = 1, hidden: int = 0) -> None:
        super().__init__()
        n_in, n_out = 3 * n_experts + 2, n_groups * n_experts
        last = nn.Linear(hidden or n_in, n_out)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), last) if hidden else last
        self.n_experts, self.n_groups = n_experts, n_groups

    def weights(self, features: torch.Tensor) -> torch.Tensor:
        """Per-sample weights [N, G, M], each row on the simplex."""
        scores = self.net(features).view(len(features), self.n_groups, self.n_experts)
        return torch.softmax(scores, dim=-1)

    def forward(self, features: torch.Tensor, log_p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Renormalised fused log-distribution [N, K'] and the weights [N, G, M]."""
        w = self.weights(features)
        # One gate: one weight vector for every outcome, [N,1,M] @ [N,M,K]; else outcome k weighted by gate k.
        fused = torch.bmm(w, log_p).squeeze(1) if self.n_groups == 1 else (w.transpose(1, 2) * log_p).sum(1)
        return torch.log_softmax(fused, dim=-1), w

    def load(self, params: GateParams) -> LogitProdGate:
        """Take the weights trained by :mod:`pathfuse.fusion.gate_training` (NumPy layout)."""
        linears = [m for m in self.modules() if isinstance(m, nn.Linear)]
        with torch.no_grad():
            for layer, matrix in zip(linears, params.layers, strict=True):  # [in + 1, out], bias last
                layer.weight.copy_(torch.as_tensor(matrix[:-1].T))
                layer.bias.copy_(torch.as_tensor(matrix[-1]))
        return self


class LogitProdObjective:
    """The training objective in torch: task NLL of the fused distribution + λ·mean over samples and gates of wᵀRw.

    The survival NLL is taken on the hazards converted from the fused distribution, so its gradient
    flows through both conversions. It is the reference the NumPy trainer is tested against, and
    what the metadata reports as the training objective reached.
    """

    def __init__(self, r: np.ndarray, corr_weight: float, survival: bool, alpha: float) -> None:
        self.r = torch.as_tensor(r, dtype=torch.float32)
        self.corr_weight, self.survival, self.alpha = corr_weight, survival, alpha

    def nll(self, log_q: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        """The task NLL of the fused log-distribution (survival: on its hazards, as the experts train)."""
        if self.survival:
            return survival_nll(output_logits(log_q, True), targets["bin"], targets["event"], self.alpha)
        return F.nll_loss(log_q, targets["label"])

    def penalty(self, w: torch.Tensor) -> torch.Tensor:
        """Mean over samples and gates of wᵀRw, for weights [N, G, M]."""
        return ((w @ self.r) * w).sum(-1).mean()

    def __call__(self, log_q: torch.Tensor, w: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        """The objective of one pass: the gate's output ``log_q`` and weights ``w`` against ``targets``."""
        return self.nll(log_q, targets) + self.corr_weight * self.penalty(w)


# ----------------------------------------------------------------------------- fit one fold
def gate_inputs(block: Block, survival: bool) -> dict[str, torch.Tensor]:
    """The gate's inputs for a block: gate features and the experts' log-distributions."""
    log_p = expert_log_distributions(torch.as_tensor(block.logits), survival)
    return {"features": gate_features(log_p), "log_p": log_p}


def gate_problem(block: Block, survival: bool, r: np.ndarray, corr_weight: float, alpha: float) -> GateProblem:
    """A block's rows as the NumPy trainer's problem."""
    inputs = gate_inputs(block, survival)
    features, log_p = inputs["features"].numpy(), inputs["log_p"].numpy()
    if survival:
        return GateProblem.build(features, log_p, r, corr_weight, bins=block.bin_index, event=block.event, alpha=alpha)
    return GateProblem.build(features, log_p, r, corr_weight, label=block.label)


def predict_blocks(model: LogitProdGate, ctx: FusionContext, fold: int,
                   survival: bool) -> tuple[dict[BlockKey, np.ndarray], dict[BlockKey, np.ndarray]]:
    """A fitted gate's fused logits and gate weights on every block of the fold (both LogitProd fits)."""
    logits, gates = {}, {}
    with torch.no_grad():
        for key, block in ctx.blocks[fold].items():
            log_q, w = model(**gate_inputs(block, survival))
            logits[key] = output_logits(log_q, survival).numpy()
            gates[key] = w.flatten(1).numpy()
    return logits, gates


def gate_schedule(settings: LogitProdSettings, kind: str) -> GateSchedule:
    """The gate's optimiser schedule of task kind ``kind`` (``fusion.logitprod.by_kind.<kind>``)."""
    schedule: GateSchedule = per_kind(settings.by_kind, kind, "fusion.logitprod.by_kind")
    return schedule


def gate_movement(gates: np.ndarray, n_experts: int) -> dict[str, float]:
    """How far the gate left its uniform start on some rows, over samples and gates.

    Mean KL(w ‖ uniform) in nats (0 = the uniform product of experts, log M = one-hot) and mean largest
    weight (1/M … 1). A gate that never moved makes LogitProd the mean-logits baseline, whatever its name.
    """
    w = np.asarray(gates, dtype=np.float64).reshape(len(gates), -1, n_experts)
    kl = (np.where(w > 0, w * np.log(np.clip(w, 1e-300, None) * n_experts), 0.0)).sum(-1)
    return {"gate_kl_from_uniform": float(kl.mean()) if len(w) else float("nan"),
            "gate_max_weight": float(w.max(-1).mean()) if len(w) else float("nan")}

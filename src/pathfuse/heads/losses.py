"""Losses of the expert heads and the discrete-time survival algebra shared with the fusers.

Discrete-time survival (Zadeh & Schmid 2020, the form used by PORPOISE/MCAT and LogitProd).
Follow-up time is cut into T bins. A head emits T hazard logits z_t; the hazard
h_t = sigmoid(z_t) is the probability of the event in bin t given survival up to bin t, and
S_t = prod_{k<=t} (1 - h_k) is the probability of surviving past bin t (S_{-1} = 1).
For a patient whose time falls in bin y:

* event observed (uncensored):  L_unc = -[log S_{y-1} + log h_y]   (survived to y, died in y)
* censored:                     L_cen = -log S_y                    (survived at least bin y)

and the loss is mean over the batch of ``(1 - alpha) * (L_unc + L_cen) + alpha * L_unc``, i.e.
``alpha`` (0.4) up-weights the uncensored terms. Everything is computed in log space with
``logsigmoid`` (log h = logsigmoid(z), log(1 - h) = logsigmoid(-z)), so there is no epsilon
clamping and the value is exact (the published code clamps with 1e-7).

The event distribution over T+1 outcomes (event in bin 0..T-1, or "survived past the last
bin") is p_t = h_t S_{t-1} for t < T and p_T = S_{T-1}. LogitProd fuses experts per outcome
of this distribution, so both conversions are differentiable here (the published code runs
them under no-grad, so the fused survival loss never reached its gates **[anchor defect]**).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, class_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean cross-entropy of class logits [B, C] against class indices [B].

    ``class_weights`` [C] re-weight each sample by its class (e.g. inverse frequency of the
    training split); the mean is then weighted, as in ``torch.nn.functional.cross_entropy``.
    """
    return F.cross_entropy(logits, target.long(), weight=class_weights)


def balanced_class_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights n / (C · n_c) of a training split; absent classes get 0."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def log_survival(hazard_logits: torch.Tensor) -> torch.Tensor:
    """Log survival log S_t for t = 0..T-1 from hazard logits [B, T] (log prob. of surviving past bin t)."""
    return torch.cumsum(F.logsigmoid(-hazard_logits), dim=-1)


def survival_nll(
    hazard_logits: torch.Tensor, bin_index: torch.Tensor, event: torch.Tensor, alpha: float = 0.4
) -> torch.Tensor:
    """Discrete-time survival negative log-likelihood (module docstring gives the formula).

    Args:
        hazard_logits: [B, T] logits of the per-bin hazards.
        bin_index: [B] bin (0..T-1) of each patient's event or censoring time.
        event: [B] 1 if the event was observed, 0 if censored (= 1 - censorship).
        alpha: weight of the extra uncensored term (0.4 in the papers; 0 = plain likelihood).

    Returns:
        The batch mean, a scalar tensor.
    """
    y = bin_index.long().unsqueeze(1)
    observed = event.to(hazard_logits.dtype)
    log_s = log_survival(hazard_logits)
    log_s_padded = F.pad(log_s, (1, 0), value=0.0)  # index t holds log S_{t-1}
    log_s_before = torch.gather(log_s_padded, 1, y).squeeze(1)
    log_s_through = torch.gather(log_s, 1, y).squeeze(1)
    log_h = torch.gather(F.logsigmoid(hazard_logits), 1, y).squeeze(1)
    uncensored = -observed * (log_s_before + log_h)
    censored = -(1.0 - observed) * log_s_through
    return ((1.0 - alpha) * (uncensored + censored) + alpha * uncensored).mean()


def hazards_to_event_distribution(hazard_logits: torch.Tensor, *, log: bool = False) -> torch.Tensor:
    """Hazard logits [..., T] → event distribution [..., T+1] (probabilities, or log-probs).

    Outcome t < T: event in bin t; outcome T: survived past the last bin. Rows sum to 1.
    Differentiable.
    """
    log_s = log_survival(hazard_logits)
    log_s_before = F.pad(log_s[..., :-1], (1, 0), value=0.0)
    log_p = torch.cat([log_s_before + F.logsigmoid(hazard_logits), log_s[..., -1:]], dim=-1)
    return log_p if log else log_p.exp()


def event_distribution_to_hazards(distribution: torch.Tensor, *, log: bool = False) -> torch.Tensor:
    """Event distribution [..., T+1] → hazard logits [..., T]; the inverse of the above.

    ``distribution`` holds probabilities (``log=False``) or log-probabilities (``log=True``,
    e.g. a fused log-softmax), and need not be normalised: h_t = p_t / sum_{k>=t} p_k is
    invariant to scale. The logit of h_t is log p_t - log sum_{k>t} p_k, computed with
    logcumsumexp so it stays finite and differentiable for tiny probabilities.
    """
    log_p = distribution if log else torch.log(distribution)
    tail = torch.logcumsumexp(log_p.flip(-1), dim=-1).flip(-1)  # log sum_{k>=t} p_k
    return log_p[..., :-1] - tail[..., 1:]


def survival_risk(hazard_logits: torch.Tensor) -> torch.Tensor:
    """Risk score −Σ_t S_t [..., T] → [...] (higher = earlier event); used for the c-index."""
    return -log_survival(hazard_logits).exp().sum(dim=-1)


def time_bins(times: np.ndarray, events: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin edges [n_bins + 1] at the quantiles of the uncensored times of a training split.

    The inner edges are the 1/T … (T-1)/T quantiles of the times with an observed event (so
    each bin holds about the same number of events); the outer edges are 0 and the largest
    training time, for the record only: :func:`assign_bins` puts anything beyond the inner
    edges into the first or last bin. Raises ValueError when no event was observed.
    """
    times = np.asarray(times, dtype=np.float64)
    observed = np.asarray(events).astype(bool)
    if not observed.any():
        raise ValueError("no observed event (all censored): survival time bins are undefined")
    inner = np.quantile(times[observed], np.arange(1, n_bins) / n_bins)
    return np.concatenate([[0.0], inner, [max(float(times.max()), float(inner[-1]))]])


def assign_bins(times: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index (0..T-1) of each time for edges from :func:`time_bins` (left-closed bins)."""
    edges = np.asarray(edges, dtype=np.float64)
    return np.searchsorted(edges[1:-1], np.asarray(times, dtype=np.float64), side="right").astype(np.int64)

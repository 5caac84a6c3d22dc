"""H heads of one architecture as one computation: parameters stacked per layer ([H, …]).

A head bank (:mod:`pathfuse.heads.bank`) trains the heads of an expert job together. Each
layer's weights are one [H, out, in] tensor, so a batch passes through all heads in one
batched matmul (``baddbmm``) instead of H small ones. The forms are written out per
architecture (not ``torch.func.vmap``) because with one head they must compute exactly what
the head module computes, bit for bit (tests/heads/test_bank.py); LayerNorm runs head by
head. Dropout draws one mask over the [H, …] tensor: independent masks per head. A head of
another class trains through :func:`_looped` (its own module, head by head; same results, no
batched matmul).

A form maps (stacked parameters {state-dict name: [H', …]}, inputs {name: [H', S, …]},
training) to logits [H', S, n_outputs]; H' ≤ H are the heads of one pass. Each head keeps its
own parameter tensors (its optimiser state stays its own); a pass stacks them, which costs a
copy of the weights next to a batched matmul over H' × S bags.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from pathfuse.heads.abmil import ABMIL
from pathfuse.heads.mlp import MLPProbe

Params = Mapping[str, torch.Tensor]
Form = Callable[[Params, Mapping[str, torch.Tensor], bool], torch.Tensor]


def stack_parameters(heads: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The heads' parameters stacked per name into [H', …] (differentiable: gradients reach each head's own)."""
    return {name: torch.stack([h[name] for h in heads]) for name in heads[0]}


def stacked_form(template: nn.Module) -> Form:
    """The batched computation of heads shaped like ``template`` (architecture and dropout taken from it)."""
    if isinstance(template, ABMIL):
        return _abmil(template)
    if isinstance(template, MLPProbe):
        return _sequential(template.net, "net.")
    return _looped(template)


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Per-head ``nn.Linear``: x [H, …, in], weight [H, out, in], bias [H, out] → [H, …, out].

    One head calls ``F.linear`` itself: ``bmm`` takes a naive kernel (not BLAS) for matrices
    under 400 multiply-adds, e.g. the last batch of two small bags, and would differ in the last bit.
    """
    if weight.shape[0] == 1:
        return F.linear(x[0], weight[0], bias[0]).unsqueeze(0)
    flat = x.reshape(x.shape[0], -1, x.shape[-1])
    out = torch.baddbmm(bias.unsqueeze(1), flat, weight.transpose(1, 2))
    return out.view(*x.shape[:-1], weight.shape[1])


def _layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, layer: nn.LayerNorm) -> torch.Tensor:
    """Per-head ``nn.LayerNorm``, head by head.

    Its fused kernel sums the affine gradients in its own order, which no batched form
    reproduces bit for bit (it is a small op next to the matmuls).
    """
    return torch.stack([F.layer_norm(x[h], layer.normalized_shape, weight[h], bias[h], layer.eps)
                        for h in range(x.shape[0])])


def _abmil(template: ABMIL) -> Form:
    """Gated ABMIL (:class:`pathfuse.heads.abmil.ABMIL`) over [H, S, N, in] bags with [H, S, N] masks."""
    pool = template.pool
    p = float(cast(nn.Dropout, pool.embed[2]).p)
    activation = torch.tanh if isinstance(pool.attn_a[1], nn.Tanh) else torch.relu

    def forward(w: Params, inputs: Mapping[str, torch.Tensor], training: bool) -> torch.Tensor:
        features, mask = inputs["features"], inputs.get("mask")
        h = F.dropout(torch.relu(_linear(features, w["pool.embed.0.weight"], w["pool.embed.0.bias"])), p, training)
        a = activation(_linear(h, w["pool.attn_a.0.weight"], w["pool.attn_a.0.bias"]))
        b = torch.sigmoid(_linear(h, w["pool.attn_b.0.weight"], w["pool.attn_b.0.bias"]))
        scores = _linear(a * b, w["pool.attn_score.weight"], w["pool.attn_score.bias"]).squeeze(-1)
        if mask is not None:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        attention = torch.softmax(scores, dim=-1)
        if mask is not None:
            attention = attention * mask
        n_tiles, hidden = h.shape[-2], h.shape[-1]
        pooled = torch.bmm(attention.reshape(-1, 1, n_tiles), h.reshape(-1, n_tiles, hidden))
        pooled = pooled.view(*h.shape[:2], hidden)
        return _linear(pooled, w["classifier.weight"], w["classifier.bias"])

    return forward


def _sequential(net: nn.Sequential, prefix: str) -> Form:
    """A Sequential of Linear, LayerNorm, GELU, ReLU and Dropout layers (the MLP probe)."""
    steps = [_step(layer, f"{prefix}{i}.") for i, layer in enumerate(net)]

    def forward(w: Params, inputs: Mapping[str, torch.Tensor], training: bool) -> torch.Tensor:
        x = inputs["features"]
        for step in steps:
            x = step(w, x, training)
        return x

    return forward


def _step(layer: nn.Module, name: str) -> Callable[[Params, torch.Tensor, bool], torch.Tensor]:
    """One layer of :func:`_sequential` on stacked inputs (``name``: its state-dict prefix)."""

    def step(w: Params, x: torch.Tensor, training: bool) -> torch.Tensor:
        if isinstance(layer, nn.Linear):
            return _linear(x, w[name + "weight"], w[name + "bias"])
        if isinstance(layer, nn.LayerNorm):
            return _layer_norm(x, w[name + "weight"], w[name + "bias"], layer)
        if isinstance(layer, nn.GELU):
            return F.gelu(x, approximate=layer.approximate)
        if isinstance(layer, nn.ReLU):
            return torch.relu(x)
        if isinstance(layer, nn.Dropout):
            return F.dropout(x, layer.p, training)
        raise TypeError(f"no stacked form for layer {type(layer).__name__}")

    if not isinstance(layer, nn.Linear | nn.LayerNorm | nn.GELU | nn.ReLU | nn.Dropout):
        raise TypeError(f"no stacked form for layer {type(layer).__name__}")
    return step


def _looped(template: nn.Module) -> Form:
    """Any other head: its own module called head by head with that head's parameters."""

    def forward(w: Params, inputs: Mapping[str, torch.Tensor], training: bool) -> torch.Tensor:
        template.train(training)
        outputs = []
        for h in range(next(iter(w.values())).shape[0]):
            state = {name: value[h] for name, value in w.items()}
            outputs.append(torch.func.functional_call(template, state, kwargs={k: v[h] for k, v in inputs.items()}))
        return torch.stack(outputs)

    return forward

"""Adam / AdamW and cosine warm restarts for :func:`pathfuse.training.fit`, without ``torch.optim``.

Why not ``torch.optim``: its first optimiser in a process imports ``torch._dynamo`` (its
``__init__`` and ``step`` are wrapped by ``torch._disable_dynamo``), which costs ~1.8 s on a
2-core machine. pathfuse never compiles, and a run starts one short-lived process per expert
(66 in the demo), so that import was ~25 % of an expert job. These classes compute the same
updates with the same tensor operations in the same order as torch 2.13's single-tensor
(``foreach=False``) Adam/AdamW and ``CosineAnnealingWarmRestarts`` stepped per epoch;
tests/test_optimizers.py checks the parameters stay bit-identical to torch's over many steps.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults (the expert recipes do not change them)
EPS = 1e-8


class Adam:
    """Adam with L2 weight decay (``decoupled=False``, torch.optim.Adam) or decoupled (AdamW).

    ``lr`` is an attribute the scheduler sets between epochs. Parameters without a gradient in
    a step are skipped and keep their step count, as in torch.
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float, weight_decay: float = 0.0,
                 decoupled: bool = False) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.weight_decay, self.decoupled = float(lr), float(weight_decay), decoupled
        self._state: dict[int, tuple[torch.Tensor, torch.Tensor, list[int]]] = {}

    def zero_grad(self) -> None:
        """Drop the gradients (``set_to_none``: the next backward writes fresh ones)."""
        for param in self.params:
            param.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient."""
        beta1, beta2 = BETAS
        for index, param in enumerate(self.params):
            if param.grad is None:
                continue
            if index not in self._state:
                self._state[index] = (torch.zeros_like(param, memory_format=torch.preserve_format),
                                      torch.zeros_like(param, memory_format=torch.preserve_format), [0])
            exp_avg, exp_avg_sq, count = self._state[index]
            count[0] += 1
            step = float(count[0])  # torch keeps the step as a float32 tensor and reads it back with .item()
            denom = _moments(param, param.grad, exp_avg, exp_avg_sq, self, (1 - beta2**step) ** 0.5)
            param.addcdiv_(exp_avg, denom, value=-(self.lr / (1 - beta1**step)))


class StackedAdam:
    """Adam/AdamW over stacked parameters [H, ...]: one optimiser state per head (a head bank).

    Each head keeps its own step count (a head without samples in a batch, or stopped early,
    does not step), so its bias corrections are its own; the update of head h is the
    element-wise update of :class:`Adam` on the slice ``param[h]`` (tested bit for bit with one
    head). One set of tensor operations serves all heads; on CPU that is faster than
    ``torch.optim``'s multi-tensor Adam over H·L separate tensors, whose foreach kernels loop
    over tensors there (benchmarks/experts.py, ``optimizer_step``).
    """

    def __init__(self, params: Iterable[torch.Tensor], n_heads: int, lr: float,
                 weight_decay: float = 0.0, decoupled: bool = False) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.weight_decay, self.decoupled = float(lr), float(weight_decay), decoupled
        self.steps = [0] * n_heads
        self._state = [(torch.zeros_like(p), torch.zeros_like(p)) for p in self.params]

    def zero_grad(self) -> None:
        """Drop the gradients (``set_to_none``)."""
        for param in self.params:
            param.grad = None

    @torch.no_grad()
    def step(self, heads: list[int]) -> None:
        """One update of heads ``heads`` (those that learned from this batch); the others stay."""
        if not heads:
            return
        beta1, beta2 = BETAS
        for h in heads:
            self.steps[h] += 1
        steps = [float(self.steps[h]) for h in heads]
        every = len(heads) == len(self.steps)
        index = None if every else torch.tensor(heads, device=self.params[0].device)
        for param, (exp_avg, exp_avg_sq) in zip(self.params, self._state, strict=True):
            if param.grad is None:
                continue
            shape = (-1,) + (1,) * (param.dim() - 1)
            neg_step = torch.tensor([-(self.lr / (1 - beta1**s)) for s in steps], dtype=param.dtype,
                                    device=param.device).view(shape)
            bias2 = torch.tensor([(1 - beta2**s) ** 0.5 for s in steps], dtype=param.dtype,
                                 device=param.device).view(shape)
            if index is None:
                p, g, m, v = param, param.grad, exp_avg, exp_avg_sq
            else:
                p, g, m, v = param[index], param.grad[index], exp_avg[index], exp_avg_sq[index]
            denom = _moments(p, g, m, v, self, bias2)
            p.add_(neg_step * m / denom)  # = addcdiv_(m, denom, value=-step_size), head by head
            if index is not None:
                param[index], exp_avg[index], exp_avg_sq[index] = p, m, v


def _moments(param: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
             opt: Adam | StackedAdam, bias_correction2_sqrt: float | torch.Tensor) -> torch.Tensor:
    """Weight decay and both moment updates in place; returns Adam's denominator."""
    beta1, beta2 = BETAS
    if opt.weight_decay != 0:
        if opt.decoupled:
            param.mul_(1 - opt.lr * opt.weight_decay)
        else:
            grad = grad.add(param, alpha=opt.weight_decay)
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    return (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(EPS)


class CosineRestarts:
    """Cosine annealing from ``optimizer.lr`` to 0, restarting after ``t0``, ``t0·t_mult``, … epochs."""

    def __init__(self, optimizer: Adam | StackedAdam, t0: int, t_mult: int) -> None:
        if t0 <= 0 or t_mult < 1:
            raise ValueError(f"cosine restarts need t0 > 0 and t_mult >= 1, got t0={t0}, t_mult={t_mult}")
        self.optimizer, self.base_lr, self.t_mult = optimizer, optimizer.lr, t_mult
        self.t_cur, self.t_i = 0, t0

    def step(self) -> None:
        """Advance one epoch and set the optimiser's learning rate."""
        self.t_cur += 1
        if self.t_cur >= self.t_i:
            self.t_cur %= self.t_i
            self.t_i *= self.t_mult
        self.optimizer.lr = 0.0 + (self.base_lr - 0.0) * (1 + math.cos(math.pi * self.t_cur / self.t_i)) / 2

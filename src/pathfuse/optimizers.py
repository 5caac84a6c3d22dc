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
            grad = param.grad
            if self.weight_decay != 0:
                if self.decoupled:
                    param.mul_(1 - self.lr * self.weight_decay)
                else:
                    grad = grad.add(param, alpha=self.weight_decay)
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            # torch keeps the step as a float32 tensor and reads it back with .item()
            step = float(count[0])
            step_size = self.lr / (1 - beta1**step)
            bias_correction2_sqrt = (1 - beta2**step) ** 0.5
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(EPS)
            param.addcdiv_(exp_avg, denom, value=-step_size)


class CosineRestarts:
    """Cosine annealing from ``optimizer.lr`` to 0, restarting after ``t0``, ``t0·t_mult``, … epochs."""

    def __init__(self, optimizer: Adam, t0: int, t_mult: int) -> None:
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

"""One training loop for every trainable model (expert heads, neural fusers).

Batches are dicts: ``batch["inputs"]`` holds the model's keyword arguments, every other key a
target tensor (``label``, ``bin``, ``event``, ``index`` …). ``loss_fn(outputs, batch)`` turns
outputs into a scalar loss; an optional ``metric_fn(outputs, targets)`` scores the whole
validation set at once (e.g. the c-index, which is not a mean over batches). Each epoch (and,
when due, each batch) reports to the caller's open :mod:`pathfuse.progress` unit for the job's log.

Honesty: the model state kept ("checkpoint choice") and early stopping depend on the
validation loader only; the test set never enters this module.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sized
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from pathfuse import progress
from pathfuse.optimizers import Adam, CosineRestarts

log = logging.getLogger(__name__)

Batch = Mapping[str, Any]
LossFn = Callable[[torch.Tensor, Batch], torch.Tensor]
MetricFn = Callable[[torch.Tensor, Mapping[str, torch.Tensor]], float]
ForwardFn = Callable[[nn.Module, Batch], torch.Tensor]


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    collate_fn: Callable[[list[Any]], Batch] | None = None,
    num_workers: int = 0,
) -> DataLoader:
    """A DataLoader whose shuffling order comes from its own seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        collate_fn=collate_fn,
        num_workers=num_workers,
    )


def default_forward(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Call the model with the batch's ``inputs`` as keyword arguments."""
    return model(**batch["inputs"])


def to_device(batch: Any, device: torch.device | str) -> Any:
    """Move every tensor of a (nested) batch to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


@dataclass
class FitResult:
    """What :func:`fit` chose: the best state (already loaded into the model) and the curve."""

    state: dict[str, torch.Tensor]
    best_epoch: int
    best_value: float
    monitor: str
    curve: pd.DataFrame
    seconds: float


@torch.no_grad()
def predict(
    model: nn.Module,
    loader: Iterable[Batch],
    forward: ForwardFn = default_forward,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Outputs of ``model`` on every batch (concatenated, on CPU) and the batches' targets."""
    model.eval()
    outputs: list[torch.Tensor] = []
    targets: dict[str, list[torch.Tensor]] = {}
    for batch in loader:
        batch = to_device(batch, device)
        outputs.append(forward(model, batch).float().cpu())
        for key, value in batch.items():
            if key != "inputs" and isinstance(value, torch.Tensor):
                targets.setdefault(key, []).append(value.cpu())
    return torch.cat(outputs), {k: torch.cat(v) for k, v in targets.items()}


def fit(
    model: nn.Module,
    train_loader: Iterable[Batch],
    val_loader: Iterable[Batch],
    loss_fn: LossFn,
    *,
    epochs: int,
    lr: float,
    weight_decay: float = 0.0,
    patience: int | None = None,
    monitor: str = "loss",
    mode: str = "min",
    seed: int = 0,
    metric_fn: MetricFn | None = None,
    forward: ForwardFn = default_forward,
    optimizer: str = "adam",
    scheduler: str = "cosine_restarts",
    t0: int = 10,
    t_mult: int = 2,
    device: str | torch.device = "cpu",
    grad_clip: float | None = None,
) -> FitResult:
    """Train ``model``, keep the state with the best validation ``monitor``, load it, return it.

    Args:
        model: any module; called through ``forward(model, batch)``.
        train_loader: dict batches to train on (module docstring), e.g. a DataLoader.
        val_loader: dict batches for checkpoint choice and early stopping (never the test set).
        loss_fn: ``(outputs, batch) -> scalar``; also gives the validation loss.
        epochs: maximum epochs.
        lr: the optimiser's (initial) learning rate; the scheduler anneals it.
        weight_decay: L2 penalty (``adam``) or decoupled decay (``adamw``).
        patience: stop after this many epochs without improvement (None: run all epochs and
            still return the best state).
        monitor: ``"loss"`` (validation loss) or a metric name computed by ``metric_fn``.
        mode: ``"min"`` or ``"max"`` for ``monitor``.
        seed: seeds torch (initialisation already happened; this fixes dropout draws).
        metric_fn: ``(val outputs, val targets) -> float``; required unless monitor is loss.
            If it is NaN at every epoch (e.g. no event in the validation set), the choice
            falls back to the validation loss, with a warning.
        forward: how to call the model on a batch.
        optimizer: ``adam`` or ``adamw`` (:mod:`pathfuse.optimizers`, torch.optim's updates bit
            for bit without its ~1.8 s ``torch._dynamo`` import).
        scheduler: ``cosine_restarts`` (CosineAnnealingWarmRestarts, T0=``t0``,
            Tmult=``t_mult``, stepped per epoch, as the expert recipes) or ``none``.
        t0: epochs of the first cosine cycle (``cosine_restarts``).
        t_mult: growth factor of each following cycle's length (``cosine_restarts``).
        device: where to train.
        grad_clip: max gradient norm, or None.
    """
    if monitor != "loss" and metric_fn is None:
        raise ValueError(f"monitor={monitor!r} needs a metric_fn (or monitor='loss')")
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    torch.manual_seed(seed)
    model.to(device)
    if optimizer not in ("adam", "adamw"):
        raise ValueError(f"optimizer must be 'adam' or 'adamw', got {optimizer!r}")
    opt = Adam(model.parameters(), lr=lr, weight_decay=weight_decay, decoupled=optimizer == "adamw")
    sched = CosineRestarts(opt, t0=t0, t_mult=t_mult) if scheduler == "cosine_restarts" else None
    sign = 1.0 if mode == "min" else -1.0
    best = _Best(sign)
    best_loss = _Best(1.0)
    metric = None if monitor == "loss" else metric_fn  # not None otherwise (checked above)
    rows, start, stale = [], time.perf_counter(), 0
    with progress.scope("training", epochs, step="epoch", bound=patience is not None) as report:
        for epoch in range(epochs):
            report.note(epoch=f"{epoch + 1}/{epochs}")
            train_loss = _train_epoch(model, train_loader, loss_fn, opt, forward, device, grad_clip, report)
            current_lr = opt.lr
            if sched is not None:
                sched.step()
            val_out, val_targets, val_loss = _evaluate(model, val_loader, loss_fn, forward, device)
            value = val_loss if metric is None else float(metric(val_out, val_targets))
            improved = best.offer(value, epoch, model)
            best_loss.offer(val_loss, epoch, model)
            stale = 0 if improved else stale + 1
            rows.append(
                {
                    "epoch": epoch,
                    "train_loss": train_loss,
                    "val_loss": val_loss,
                    "val_metric": value,
                    "lr": current_lr,
                    "seconds": time.perf_counter() - start,
                }
            )
            report.advance(**{"train_loss": train_loss, "val_loss": val_loss, f"val_{monitor}": value,
                              "best": f"{best.value:.4g} @ epoch {best.epoch + 1}"})
            if patience is not None and stale > patience:
                break
    chosen, chosen_monitor = best, monitor
    if best.state is None:
        log.warning(
            "validation %s was undefined at every epoch; choosing the checkpoint by validation loss instead",
            monitor,
        )
        chosen, chosen_monitor = best_loss, "loss"
    if chosen.state is None:
        raise RuntimeError("validation loss was NaN at every epoch; training diverged")
    model.load_state_dict(chosen.state)
    return FitResult(
        state=chosen.state,
        best_epoch=chosen.epoch,
        best_value=chosen.value,
        monitor=chosen_monitor,
        curve=pd.DataFrame(rows),
        seconds=time.perf_counter() - start,
    )


class _Best:
    """The best value so far and a copy of the model state when it was reached."""

    def __init__(self, sign: float) -> None:
        self.sign, self.value, self.epoch = sign, math.nan, -1
        self.state: dict[str, torch.Tensor] | None = None

    def offer(self, value: float, epoch: int, model: nn.Module) -> bool:
        if math.isnan(value) or (self.state is not None and self.sign * value >= self.sign * self.value):
            return False
        self.value, self.epoch = value, epoch
        self.state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        return True


def _train_epoch(
    model: nn.Module,
    loader: Iterable[Batch],
    loss_fn: LossFn,
    opt: Adam,
    forward: ForwardFn,
    device: str | torch.device,
    grad_clip: float | None,
    report: progress.Progress,
) -> float:
    model.train()
    total, count = 0.0, 0
    n_batches = len(loader) if isinstance(loader, Sized) else None
    for i, batch in enumerate(loader, 1):
        batch = to_device(batch, device)
        outputs = forward(model, batch)
        loss = loss_fn(outputs, batch)
        opt.zero_grad()
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        n = len(outputs)
        total, count = total + float(loss.detach()) * n, count + n
        report.tick(i, n_batches)
    return total / max(count, 1)


@torch.no_grad()
def _evaluate(
    model: nn.Module,
    loader: Iterable[Batch],
    loss_fn: LossFn,
    forward: ForwardFn,
    device: str | torch.device,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], float]:
    model.eval()
    outputs: list[torch.Tensor] = []
    targets: dict[str, list[torch.Tensor]] = {}
    total, count = 0.0, 0
    for batch in loader:
        batch = to_device(batch, device)
        out = forward(model, batch)
        total += float(loss_fn(out, batch)) * len(out)
        count += len(out)
        outputs.append(out.float().cpu())
        for key, value in batch.items():
            if key != "inputs" and isinstance(value, torch.Tensor):
                targets.setdefault(key, []).append(value.cpu())
    if not count:
        raise ValueError("the validation loader is empty; early stopping needs validation samples")
    return torch.cat(outputs), {k: torch.cat(v) for k, v in targets.items()}, total / count


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))

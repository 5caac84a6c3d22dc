"""A head bank: the heads of one recipe trained together on shared batches (docs/methods.md, Head bank).

An expert job trains 30 heads of one recipe (5 outer folds, each with 5 inner models behind
the out-of-fold logits) on one cohort. Trained one after the other, every head re-reads every
bag in every epoch and runs its own small matmuls. The bank reads each batch once and sends it
through all heads in one pass (:mod:`pathfuse.heads.stacked`). What stays per head is all
that would otherwise couple them: its training samples (a head learns only from its own:
its loss covers only its slots of the batch), its loss (own class weights, own survival
bins), its Adam state and step count (its own parameter tensors in :class:`pathfuse.optimizers.Adam`;
a head without samples in a batch has no gradient and does not step), its dropout
masks, its validation set, checkpoint choice and early stopping (a stopped head stops
learning, the others go on). The learning rate follows the recipe's per-epoch cosine
schedule, the same function of the epoch for every head, so one schedule object serves all.

The one deliberate difference to training the heads one by one: heads share the order in
which samples are drawn. The bank shuffles the union of the heads' training samples and cuts
it into batches of ``batch_size · |union| / mean |train_h|`` samples, so a head's expected
share of a batch is the recipe's ``batch_size`` (binomially spread around it) and it takes
about as many steps per epoch as alone. With one head the union is its training set, the
batch its own, and training is bit-identical to :func:`pathfuse.training.fit` (tested).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from pathfuse import progress
from pathfuse.heads.stacked import Form, stack_parameters, stacked_form
from pathfuse.optimizers import Adam, CosineRestarts
from pathfuse.training import Batch, FitResult, LossFn, MetricFn, make_loader, to_device

log = logging.getLogger(__name__)

#: Elements of gathered inputs ([heads, slots, tiles, dim]) in one pass; heads beyond it go in
#: further passes of the same step (bounds memory with 30 heads × 2,000-tile bags).
PASS_ELEMENTS = 2**28
#: Largest share of padded slots in a pass before its heads are split into two passes.
PAD_SHARE = 0.125


@dataclass
class BankHead:
    """One head of a bank; positions index the bank's datasets (the job's samples)."""

    name: str
    model: nn.Module  # initialised from the head's own seed; holds its chosen state at the end
    train: Sequence[int]  # what it learns from, in its own order
    val: Sequence[int]  # what chooses its checkpoint
    targets: Mapping[str, np.ndarray]  # target arrays over all positions
    loss_fn: LossFn
    metric_fn: MetricFn | None  # None: the monitor is the validation loss


@dataclass(frozen=True)
class BankRecipe:
    """The training schedule every head of the bank follows (an expert recipe's fields)."""

    epochs: int
    lr: float
    weight_decay: float
    batch_size: int
    patience: int | None
    monitor: str
    mode: str  # "min" or "max"
    t0: int = 10
    t_mult: int = 2


def train_bank(
    heads: Sequence[BankHead],
    data: tuple[Dataset, Dataset],
    collate: Callable[[list[Any]], Batch],
    recipe: BankRecipe,
    *,
    seed: int,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
) -> list[FitResult]:
    """Train every head; load each one's chosen state into its model; return their results.

    ``data`` are the training dataset (bags subsampled, seeded ``seed + 1``) and the evaluation
    dataset over the same positions; ``seed`` fixes dropout (``seed``) and the order (``seed + 2``).
    """
    torch.manual_seed(seed)
    for head in heads:
        head.model.to(device)
    params = [dict(h.model.named_parameters()) for h in heads]
    if any(True for _ in heads[0].model.buffers()):
        raise ValueError(f"{type(heads[0].model).__name__} has buffers; a head bank stacks parameters only")
    bank = _Bank(heads, params, stacked_form(heads[0].model), collate, recipe, device, num_workers)
    # pathfuse's Adam over every head's tensors: each tensor keeps its own state and step count,
    # so each head does; as fast as torch.optim's foreach Adam at 30 heads on a CPU
    # (benchmarks/experts.py, optimizer_step) and without its torch._dynamo import.
    opt = Adam([p for h in params for p in h.values()], lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched = CosineRestarts(opt, t0=recipe.t0, t_mult=recipe.t_mult)
    union = list(dict.fromkeys(p for h in heads for p in h.train))
    batch = max(1, round(recipe.batch_size * len(union) / np.mean([len(h.train) for h in heads])))
    # A loader over the union's indices draws its order exactly as a head's own training loader.
    order = make_loader(range(len(union)), batch, shuffle=True, seed=seed + 2)  # type: ignore[arg-type]
    tracks = [_Track(recipe) for _ in heads]
    start = time.perf_counter()
    # A unit of the job's progress lines: an epoch per step, a batch tick within long epochs.
    with progress.scope("head bank", recipe.epochs, step="epoch", bound=recipe.patience is not None,
                        heads=len(heads)) as report:
        for epoch in range(recipe.epochs):
            running = [i for i, t in enumerate(tracks) if not t.stopped]
            if not running:
                break
            report.note(epoch=f"{epoch + 1}/{recipe.epochs}", training=f"{len(running)} heads")
            batches = [[union[i] for i in b.tolist()] for b in order]
            train_loss = bank.train_epoch(data[0], batches, running, opt, report)
            lr = opt.lr
            sched.step()
            for i, (val_loss, value) in bank.validate(data[1], running).items():
                tracks[i].offer(epoch, train_loss[i], val_loss, value, lr, time.perf_counter() - start,
                                partial(_state, params[i]))
            going = [i for i in running if not tracks[i].stopped]
            log.info("head bank epoch %d/%d: %d of %d heads training; best validation %s: %s", epoch + 1,
                     recipe.epochs, len(going), len(heads), recipe.monitor,
                     ", ".join(f"{heads[i].name} {tracks[i].best[0]:.4g}" for i in going))
            report.advance()
    seconds = time.perf_counter() - start
    share = bank.work / max(bank.work.sum(), 1)
    results = []
    for head, track, part in zip(heads, tracks, share, strict=True):
        result = track.result(seconds * float(part))
        head.model.load_state_dict(result.state)
        results.append(result)
    return results


class _Bank:
    """The stacked heads and how a batch reaches them (training steps, validation passes)."""

    def __init__(self, heads: Sequence[BankHead], params: Sequence[Mapping[str, torch.Tensor]], form: Form,
                 collate: Callable[[list[Any]], Batch], recipe: BankRecipe, device: str | torch.device,
                 num_workers: int) -> None:
        self.heads, self.params, self.form, self.collate = heads, params, form, collate
        self.recipe, self.device, self.num_workers = recipe, torch.device(device), num_workers
        self.members = [set(h.train) for h in heads]
        self.work = np.zeros(len(heads))  # samples each head processed: its share of the bank's time
        bf16 = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        self.autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext

    def train_epoch(self, dataset: Dataset, batches: list[list[int]], running: list[int],
                    opt: Adam, report: progress.Progress) -> dict[int, float]:
        """One pass over ``batches``; each running head learns from its own slots of each."""
        total, count = dict.fromkeys(running, 0.0), dict.fromkeys(running, 0)
        # its own generator: drawing its workers' base seed leaves the dropout stream alone
        loader = DataLoader(dataset, batch_sampler=batches, collate_fn=self.collate, num_workers=self.num_workers,
                            generator=torch.Generator())
        for k, (positions, batch) in enumerate(zip(batches, loader, strict=True)):
            report.tick(k, len(batches))
            slots = {i: s for i in running if (s := [j for j, p in enumerate(positions) if p in self.members[i]])}
            if not slots:  # only stopped heads learn from this batch
                continue
            opt.zero_grad()  # heads without slots keep no gradient: they do not step
            inputs = to_device(batch["inputs"], self.device)
            for outputs in self._passes(inputs, slots, training=True):
                losses = [self._loss(i, out, [positions[j] for j in slots[i]]) for i, out in outputs.items()]
                sum(losses[1:], losses[0]).backward()
                for (i, out), loss in zip(outputs.items(), losses, strict=True):
                    total[i], count[i] = total[i] + float(loss.detach()) * len(out), count[i] + len(out)
            opt.step()
        return {i: total[i] / max(count[i], 1) for i in running}

    @torch.no_grad()
    def validate(self, dataset: Dataset, running: list[int]) -> dict[int, tuple[float, float]]:
        """Each running head on its validation samples, in batches of the recipe's size: (loss, monitor)."""
        size = self.recipe.batch_size
        outputs: dict[int, list[torch.Tensor]] = {i: [] for i in running}
        loss = dict.fromkeys(running, 0.0)
        for start in range(0, max(len(self.heads[i].val) for i in running), size):
            chunks = {i: list(self.heads[i].val[start:start + size]) for i in running}
            chunks = {i: c for i, c in chunks.items() if c}
            unique = list(dict.fromkeys(p for c in chunks.values() for p in c))
            where = {p: j for j, p in enumerate(unique)}
            batch = self.collate([dataset[p] for p in unique])
            inputs = to_device(batch["inputs"], self.device)
            for out in self._passes(inputs, {i: [where[p] for p in c] for i, c in chunks.items()}, training=False):
                for i, o in out.items():
                    loss[i] += float(self._loss(i, o, chunks[i])) * len(o)
                    outputs[i].append(o.float().cpu())
        results = {}
        for i in running:
            head = self.heads[i]
            if not head.val:
                raise ValueError(f"head {head.name} has no validation samples; early stopping needs them")
            val_loss = loss[i] / len(head.val)
            targets = {k: torch.as_tensor(v[list(head.val)]) for k, v in head.targets.items()}
            value = val_loss if head.metric_fn is None else float(head.metric_fn(torch.cat(outputs[i]), targets))
            results[i] = (val_loss, value)
        return results

    def _passes(self, inputs: Mapping[str, torch.Tensor], slots: dict[int, list[int]],
                training: bool) -> Iterator[dict[int, torch.Tensor]]:
        """Logits of each head on its slots ({head: [n_h, outputs]}), in as few passes as memory allows.

        A pass pads its heads' slots to the longest. Heads are taken in order of their slot
        count and a pass closes when memory is full or padding would exceed ``PAD_SHARE`` of its
        rows (an outer model holds more samples of a batch than an inner one).
        """
        per_slot = inputs["features"][0].numel()
        group: list[int] = []
        rows = 0
        for i in sorted(slots, key=lambda i: len(slots[i])):
            width = len(slots[i])
            padded = (len(group) + 1) * width
            if group and (padded * per_slot > PASS_ELEMENTS or padded - rows - width > PAD_SHARE * padded):
                yield self._pass(inputs, {h: slots[h] for h in group}, training)
                group, rows = [], 0
            group.append(i)
            rows += width
        yield self._pass(inputs, {h: slots[h] for h in group}, training)

    def _pass(self, inputs: Mapping[str, torch.Tensor], slots: dict[int, list[int]],
              training: bool) -> dict[int, torch.Tensor]:
        width = max(len(s) for s in slots.values())
        for i, s in slots.items():
            self.work[i] += len(s)
        index = torch.tensor([s + [0] * (width - len(s)) for s in slots.values()], device=self.device)
        with self.autocast():
            out = self.form(stack_parameters([self.params[i] for i in slots]),
                            {k: v[index] for k, v in inputs.items()}, training)
        return {i: out[r, :len(s)].float() for r, (i, s) in enumerate(slots.items())}

    def _loss(self, i: int, outputs: torch.Tensor, positions: list[int]) -> torch.Tensor:
        head = self.heads[i]
        batch = {k: torch.as_tensor(v[positions]) for k, v in head.targets.items()}
        return head.loss_fn(outputs, to_device(batch, self.device))


class _Track:
    """One head's curve, best states (by monitor and by loss) and early stopping."""

    def __init__(self, recipe: BankRecipe) -> None:
        self.recipe, self.sign = recipe, 1.0 if recipe.mode == "min" else -1.0
        self.rows: list[dict[str, float]] = []
        self.best: tuple[float, int, dict[str, torch.Tensor] | None] = (math.nan, -1, None)
        self.best_loss: tuple[float, int, dict[str, torch.Tensor] | None] = (math.nan, -1, None)
        self.stale, self.stopped = 0, False

    def offer(self, epoch: int, train_loss: float, val_loss: float, value: float, lr: float,
              seconds: float, state: Callable[[], dict[str, torch.Tensor]]) -> None:
        self.rows.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                          "val_metric": value, "lr": lr, "seconds": seconds})
        improved = _better(self.best, value, self.sign)
        if improved:
            self.best = (value, epoch, state())
        if _better(self.best_loss, val_loss, 1.0):
            self.best_loss = (val_loss, epoch, self.best[2] if improved else state())
        self.stale = 0 if improved else self.stale + 1
        patience = self.recipe.patience
        self.stopped = patience is not None and self.stale > patience

    def result(self, seconds: float) -> FitResult:
        chosen, monitor = self.best, self.recipe.monitor
        if chosen[2] is None:
            log.warning("validation %s was undefined at every epoch; choosing the checkpoint by "
                        "validation loss instead", monitor)
            chosen, monitor = self.best_loss, "loss"
        if chosen[2] is None:
            raise RuntimeError("validation loss was NaN at every epoch; training diverged")
        return FitResult(state=chosen[2], best_epoch=chosen[1], best_value=chosen[0], monitor=monitor,
                         curve=pd.DataFrame(self.rows), seconds=seconds)


def _state(params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A head's parameters as its module's state dict (a copy, on the CPU)."""
    return {name: p.detach().cpu().clone() for name, p in params.items()}


def _better(best: tuple[float, int, Any], value: float, sign: float) -> bool:
    return not math.isnan(value) and (best[2] is None or sign * value < sign * best[0])

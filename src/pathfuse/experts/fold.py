"""The folds of an expert job: each outer model with its inner OOF models, all trained in one head bank."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from pathfuse.attention import write_attention
from pathfuse.data.splits import Fold, patient_kfold
from pathfuse.experts.job import FoldResult, Job
from pathfuse.experts.predict import attention_rows, predict_rows
from pathfuse.experts.resume import save_fold
from pathfuse.heads import build_head
from pathfuse.heads.bank import BankHead, BankRecipe, train_bank
from pathfuse.heads.losses import balanced_class_weights, time_bins
from pathfuse.heads.objectives import Objective, monitor_fn
from pathfuse.plan import inner_folds_needed
from pathfuse.reproducibility import derive_seed
from pathfuse.seeds import replicate_parts
from pathfuse.settings import SurvivalHead
from pathfuse.training import FitResult, LossFn, count_parameters

log = logging.getLogger(__name__)


class FoldError(ValueError):
    """A fold cannot train (a class absent from training, no event); names task, fold, samples."""


@dataclass
class FoldPlan:
    """One outer fold to train: its splits, bin edges, seeds and inner partition."""

    fold: Fold
    fingerprint: str
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    edges: np.ndarray | None
    objective: Objective
    seed: int
    partitions: list[tuple[list[str], list[str]]]


def plan_fold(job: Job, fold: Fold, fingerprint: str) -> FoldPlan:
    """What fold ``fold`` trains: the outer model and the inner models behind its OOF logits."""
    by_id = job.samples.set_index("sample_id", drop=False)
    train, val, test = (by_id.loc[list(ids)] for ids in (fold.train, fold.val, fold.test))
    edges = check_fold(job, fold, train)
    # The training seed; a replicate changes only this (and the inner models' seeds derived from
    # it), never the inner partition below, so replicates differ by training randomness alone.
    seed = derive_seed(job.cfg.seed, job.spec.id, job.encoder, fold.index,
                       *replicate_parts(job.replicate))
    n_inner = inner_folds_needed(job.cfg)
    partitions = (
        patient_kfold(train, n_inner, derive_seed(job.cfg.seed, job.spec.id, "inner", fold.index),
                      job.spec.kind_strategy.stratify_by)
        if n_inner
        else []
    )
    return FoldPlan(fold, fingerprint, train, val, test, edges, Objective(job.spec.kind, edges), seed,
                    [(list(a), list(b)) for a, b in partitions])


def train_folds(job: Job, plans: list[FoldPlan]) -> list[FoldResult]:
    """Train every head of ``plans`` in one head bank, then write each fold's predictions.

    The bank's order and dropout come from the first head's seed (the first fold's outer model),
    so a job of one head trains exactly as that head alone.
    """
    heads = [head for plan in plans for head in fold_heads(job, plan)]
    seed = plans[0].seed
    results = train_bank(
        heads,
        (job.dataset(job.samples, {}, True, seed + 1), job.dataset(job.samples, {}, False, seed)),
        job.collate,
        BankRecipe(**{k: getattr(job.recipe, k) for k in ("epochs", "lr", "weight_decay", "batch_size",
                                                        "patience", "monitor")},
                   mode="min" if job.recipe.monitor == "loss" else "max"),
        seed=seed,
        device=job.device,
        num_workers=job.settings.num_workers,
    )
    out, first = [], 0
    for plan in plans:
        n = 1 + len(plan.partitions)
        out.append(finish_fold(job, plan, heads[first:first + n], results[first:first + n]))
        first += n
    return out


def fold_heads(job: Job, plan: FoldPlan) -> list[BankHead]:
    """The fold's outer head (trained on train) and inner heads (each on its inner-fit part)."""
    position = pd.Series(np.arange(len(job.samples)), index=job.samples["sample_id"])
    val = position[plan.val["sample_id"]].tolist()
    seeds = [plan.seed] + [derive_seed(plan.seed, "inner", j) for j in range(len(plan.partitions))]
    fits = [list(plan.train["sample_id"])] + [fit_ids for fit_ids, _ in plan.partitions]
    names = ["outer"] + [f"inner{j}" for j in range(len(plan.partitions))]
    targets = plan.objective.targets(job.samples)
    monitor = job.recipe.monitor
    return [
        BankHead(
            name=f"fold{plan.fold.index}.{name}",
            model=_head(job, seed),
            train=position[ids].tolist(),
            val=val,
            targets=targets,
            loss_fn=_loss(job, plan.objective, job.samples.set_index("sample_id").loc[ids]),
            metric_fn=None if monitor == "loss" else monitor_fn(monitor, job.spec.kind),
        )
        for name, seed, ids in zip(names, seeds, fits, strict=True)
    ]


def finish_fold(job: Job, plan: FoldPlan, heads: list[BankHead], results: list[FitResult]) -> FoldResult:
    """Predictions of the fold's trained heads, its facts, and its saved partial files."""
    fold, model, result = plan.fold, heads[0].model, results[0]
    rows = [
        predict_rows(job, model, df, plan.objective, fold.index, split, oof=False)
        for split, df in (("train", plan.train), ("val", plan.val), ("test", plan.test))
    ]
    attention = attention_rows(job, model, plan.test, fold.index)
    by_id = job.samples.set_index("sample_id", drop=False)
    for (_, held_ids), head in zip(plan.partitions, heads[1:], strict=True):
        rows.append(predict_rows(job, head.model, by_id.loc[held_ids], plan.objective, fold.index, "train", oof=True))
    curves = [r.curve.assign(model=h.name.split(".")[-1]) for h, r in zip(heads, results, strict=True)]
    info = {
        "train_seconds": result.seconds,
        "inner_seconds": sum(r.seconds for r in results[1:]),
        "params": count_parameters(model),
        "flops": int(flops(round(job.bag_tiles(plan.train)))) if (flops := getattr(model, "flops", None)) else None,
        "best_epoch": result.best_epoch,
        "monitor": result.monitor,
        "best_value": result.best_value,
        "carve_val": fold.carve_val,
        "split_source": fold.source,
        "n_train": len(plan.train),
        "n_val": len(plan.val),
        "n_test": len(plan.test),
    }
    curve = pd.concat(curves, ignore_index=True).assign(fold=fold.index)
    bin_edges = None if plan.edges is None else [float(e) for e in plan.edges]
    write_attention([attention], job.partial_attention_path(fold.index), {"fold": fold.index})
    save_fold(job, fold.index, model, info, pd.concat(rows, ignore_index=True), curve, bin_edges,
              plan.fingerprint)
    return FoldResult(fold.index, pd.concat(rows, ignore_index=True), info, curve, bin_edges, attention)


def check_fold(job: Job, fold: Fold, train: pd.DataFrame) -> np.ndarray | None:
    """Refuse folds a head cannot learn from; return the time-bin edges of the training split.

    A fold without events (time-to-event kinds) or without some class cannot train a head, and would
    otherwise fail late or silently. Returns the bin edges for time-to-event kinds, None for the others.
    """
    spec, kind = job.spec, job.spec.kind_strategy
    where = f"task {spec.id}, encoder {job.encoder}, fold {fold.index}"
    if kind.time_to_event:
        if int(train["event"].sum()) == 0:
            raise FoldError(
                f"{where}: no observed event among the {len(train)} training samples "
                f"({fold.source}); survival bins and the likelihood need events"
            )
        return time_bins(train["time"].to_numpy(), train["event"].to_numpy(), spec.n_bins)
    if not kind.has_classes:
        return None
    absent = sorted(set(range(len(spec.classes))) - set(train["label"].tolist()))
    if absent:
        names = [spec.display_classes[i] for i in absent]
        raise FoldError(
            f"{where}: class(es) {names} have no training sample ({fold.source}; training "
            f"samples e.g. {list(train['sample_id'][:5])}); fix the split or the classes"
        )
    return None


def _head(job: Job, seed: int) -> torch.nn.Module:
    """The recipe's head, initialised from ``seed``."""
    torch.manual_seed(seed)
    return build_head(job.recipe.head, job.in_dim, job.spec.n_outputs, job.recipe)


def _loss(job: Job, objective: Objective, train: pd.DataFrame) -> LossFn:
    """The head's loss: the kind's, with class weights of its own training samples when asked."""
    recipe = job.recipe
    if isinstance(recipe, SurvivalHead):
        return objective.loss(recipe.alpha)
    weights = None
    if recipe.class_weights == "balanced":
        weights = balanced_class_weights(train["label"].to_numpy(), len(job.spec.classes)).to(job.device)
    return objective.loss(class_weights=weights)

"""One outer fold of an expert job: the outer model, its predictions, and the inner OOF models."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch

from pathfuse import progress
from pathfuse.attention import write_attention
from pathfuse.data.splits import Fold, patient_kfold
from pathfuse.experts.job import FoldResult, Job
from pathfuse.experts.predict import attention_rows, predict_rows
from pathfuse.experts.resume import finished_fold, fold_fingerprint, save_fold
from pathfuse.heads import build_head
from pathfuse.heads.losses import balanced_class_weights, time_bins
from pathfuse.heads.objectives import Objective, monitor_fn
from pathfuse.plan import inner_folds_needed
from pathfuse.reproducibility import derive_seed
from pathfuse.seeds import replicate_parts
from pathfuse.settings import SurvivalHead
from pathfuse.training import FitResult, count_parameters, fit, make_loader

log = logging.getLogger(__name__)


class FoldError(ValueError):
    """A fold cannot train (a class absent from training, no event); names task, fold, samples."""


def run_fold(job: Job, fold: Fold) -> FoldResult:
    """Train (or resume) one outer fold with its inner out-of-fold models.

    Each model trained is one step of the job's open :mod:`pathfuse.progress` unit.
    """
    report, n_inner = progress.current(), inner_folds_needed(job.cfg)
    fingerprint = fold_fingerprint(job, fold)
    if (done := finished_fold(job, fold, fingerprint)) is not None:
        report.skip(1 + n_inner)
        return done
    by_id = job.samples.set_index("sample_id", drop=False)
    train, val, test = (by_id.loc[list(ids)] for ids in (fold.train, fold.val, fold.test))
    edges = check_fold(job, fold, train)
    objective = Objective(job.spec.kind, edges)
    # The training seed; a replicate changes only this (and the inner models' seeds derived from
    # it), never the inner partition below, so replicates differ by training randomness alone.
    seed = derive_seed(job.cfg.seed, job.spec.id, job.encoder, fold.index,
                       *replicate_parts(job.replicate))
    report.note(model="outer")
    model, result = fit_head(job, train, val, objective, seed)
    report.advance()
    rows = [
        predict_rows(job, model, df, objective, fold.index, split, oof=False)
        for split, df in (("train", train), ("val", val), ("test", test))
    ]
    attention = attention_rows(job, model, test, fold.index)
    curves = [result.curve.assign(model="outer")]
    inner_seconds = 0.0
    partitions = (
        patient_kfold(train, n_inner, derive_seed(job.cfg.seed, job.spec.id, "inner", fold.index),
                      job.spec.kind_strategy.stratify_by)
        if n_inner
        else []
    )
    for j, (fit_ids, held_ids) in enumerate(partitions):
        report.note(model=f"inner {j + 1}/{n_inner}")
        inner_model, inner = fit_head(
            job, by_id.loc[list(fit_ids)], val, objective, derive_seed(seed, "inner", j)
        )
        report.advance()
        rows.append(
            predict_rows(
                job, inner_model, by_id.loc[list(held_ids)], objective, fold.index, "train", oof=True
            )
        )
        curves.append(inner.curve.assign(model=f"inner{j}"))
        inner_seconds += inner.seconds
    info = {
        "train_seconds": result.seconds,
        "inner_seconds": inner_seconds,
        "params": count_parameters(model),
        "flops": int(flops(round(job.bag_tiles(train)))) if (flops := getattr(model, "flops", None)) else None,
        "best_epoch": result.best_epoch,
        "monitor": result.monitor,
        "best_value": result.best_value,
        "carve_val": fold.carve_val,
        "split_source": fold.source,
        "n_train": len(train),
        "n_val": len(val),
        "n_test": len(test),
    }
    curve = pd.concat(curves, ignore_index=True).assign(fold=fold.index)
    bin_edges = None if edges is None else [float(e) for e in edges]
    write_attention([attention], job.partial_attention_path(fold.index), {"fold": fold.index})
    save_fold(
        job, fold.index, model, info, pd.concat(rows, ignore_index=True), curve, bin_edges, fingerprint
    )
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


def fit_head(
    job: Job, train: pd.DataFrame, val: pd.DataFrame, objective: Objective, seed: int
) -> tuple[torch.nn.Module, FitResult]:
    """Build the recipe's head from ``seed`` and train it with early stopping on ``val``."""
    recipe = job.recipe
    torch.manual_seed(seed)
    model = build_head(recipe.head, job.in_dim, job.spec.n_outputs, recipe)
    if isinstance(recipe, SurvivalHead):
        loss_fn = objective.loss(recipe.alpha)
    else:
        weights = None
        if recipe.class_weights == "balanced":
            weights = balanced_class_weights(train["label"].to_numpy(), len(job.spec.classes)).to(job.device)
        loss_fn = objective.loss(class_weights=weights)
    make = job.dataset
    train_loader = make_loader(
        make(train, objective.targets(train), True, seed + 1),
        recipe.batch_size,
        shuffle=True,
        seed=seed + 2,
        collate_fn=job.collate,
        num_workers=job.settings.num_workers,
    )
    val_loader = make_loader(
        make(val, objective.targets(val), False, seed),
        recipe.batch_size,
        shuffle=False,
        collate_fn=job.collate,
        num_workers=job.settings.num_workers,
    )
    monitor = recipe.monitor
    result = fit(
        model,
        train_loader,
        val_loader,
        loss_fn,
        epochs=recipe.epochs,
        lr=recipe.lr,
        weight_decay=recipe.weight_decay,
        patience=recipe.patience,
        monitor=monitor,
        mode="min" if monitor == "loss" else "max",
        seed=seed,
        metric_fn=None if monitor == "loss" else monitor_fn(monitor, job.spec.kind),
        device=job.device,
    )
    return model, result

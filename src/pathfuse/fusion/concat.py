"""The simple feature-fusion baseline: concatenate the teachers' features, train one head.

Tile tasks: the teachers' tile embeddings concatenated → the experts' MLP probe. Slide tasks:
each tile's features from every teacher concatenated (the teachers embed the same tiles) →
one gated ABMIL, trained like an expert (Adam, cosine warm restarts, checkpoint by validation
loss, or validation c-index for survival). This is the "Concat" of Shazam's fusion ablation and
the bar any feature-level fuser has to clear.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from pathfuse.fusion import FoldOutput
from pathfuse.fusion.blocks import Block
from pathfuse.fusion.context import FusionContext
from pathfuse.fusion.features import MultiBagDataset, TeacherFeatures, collate_multibags
from pathfuse.fusion.fitting import TensorBatches, block_targets, forward_flops, kind_monitor, task_loss
from pathfuse.heads import build_head
from pathfuse.kinds import TaskKind
from pathfuse.training import count_parameters, fit, make_loader, predict


def _forward(model: nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
    inputs = batch["inputs"]
    if "masks" in inputs:
        return model(inputs["features"][0], inputs["masks"][0])
    return model(inputs["features"])


def _data(feats: TeacherFeatures, block: Block, kind: TaskKind, batch_size: int, shuffle: bool, seed: int,
          max_tiles: int | None):
    targets = block_targets(block, kind)
    if feats.is_slide:
        dataset = MultiBagDataset(feats, block.sample_id, {k: v.numpy() for k, v in targets.items()},
                                  max_tiles=max_tiles, seed=seed, concatenate=True)
        return make_loader(dataset, batch_size, shuffle=shuffle, seed=seed, collate_fn=collate_multibags)
    features = torch.cat(feats.tile_matrix(block), dim=1)
    return TensorBatches({"features": features}, targets, batch_size, shuffle=shuffle, seed=seed)


def fit_fold(ctx: FusionContext, fold: int) -> FoldOutput:
    """Train the concatenated-feature head on one outer fold and predict every block."""
    start = time.perf_counter()
    settings, kind = ctx.settings.concat, ctx.task.kind_strategy
    survival = kind.time_to_event  # the survival ABMIL and its epoch budget
    feats: TeacherFeatures = ctx.features
    train, val = ctx.block(fold, "train"), ctx.block(fold, "val")
    seed = ctx.seed("concat", fold)
    torch.manual_seed(seed)
    n_outputs = train.logits.shape[2]
    if feats.is_slide:
        head = "abmil_survival" if survival else "abmil"
        epochs = settings.max_epochs_survival if survival else settings.max_epochs_classification
        lr, batch_size = settings.lr, settings.bag_batch_size
    else:
        head, epochs, lr, batch_size = "mlp", settings.max_epochs_tile, settings.tile_lr, settings.batch_size
    model = build_head(head, sum(feats.dims), n_outputs)
    train_data = _data(feats, train, kind, batch_size, True, seed, settings.max_tiles)
    val_data = _data(feats, val, kind, batch_size if feats.is_slide else max(len(val), 1), False, seed, None)
    # The kind's early-stopping score on validation, else the validation loss.
    monitor, mode, metric_fn = kind_monitor(ctx, val, fold) or ("loss", "min", None)
    result = fit(model, train_data, val_data, task_loss(kind, ctx.settings.survival_alpha), epochs=epochs,
                 lr=lr, weight_decay=settings.weight_decay, patience=settings.patience, monitor=monitor, mode=mode,
                 seed=seed, metric_fn=metric_fn, forward=_forward, optimizer="adam", scheduler="cosine_restarts")
    train_seconds = time.perf_counter() - start
    logits = {key: predict(model, _data(feats, block, kind, batch_size, False, seed, None), _forward)[0].numpy()
              for key, block in ctx.blocks[fold].items() if not key[1]}
    first_val = next(iter(_data(feats, val, kind, batch_size, False, seed, None)))
    cost = {
        "train_seconds": train_seconds, "params": count_parameters(model),
        "flops": forward_flops(model, lambda: _forward(model, first_val), len(first_val["index"])),
        "best_epoch": result.best_epoch, "epochs_run": len(result.curve), "monitor": result.monitor,
        "best_value": result.best_value,
    }
    return FoldOutput(logits=logits, cost=cost)

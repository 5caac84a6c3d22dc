"""Shazam: feature-level fusion of the teachers by self-attention over teacher tokens, with distillation.

Formulation (METHODS.md §4; deviations in docs/methods.md):

* Teacher i's input — a tile embedding, or for slide tasks its bag pooled by the teacher's own
  trainable gated ABMIL (end to end) — is projected to a D-dim token by
  Linear(D_i→D)–LayerNorm–ReLU–Linear(D→D)–LayerNorm–ReLU (D = 128).
* K = 5 single-head self-attention blocks over the N teacher tokens: Q, K, V, O = Linear(D, D),
  softmax(QKᵀ/√D)V, post-norm residual LayerNorm(x + O(·)); no FFN, no dropout.
* T_final = mean over tokens; classifier Linear(D,D)–ReLU–LayerNorm–Linear(D,C) (C classes, or
  T hazard logits with the discrete-time survival NLL).
* Loss = task loss + λ·Σ_i [(1 − cos(T_final, T_i)) + Huber_δ(T_final, T_i)]. The targets T_i
  are explicit (``fusion.shazam.distill_target``): a trainable Linear(E_i → D) of the teacher's
  representation (default), or a fixed seeded random one (what the published code does, by
  never optimising its target layers **[anchor defect]**), or none. The teacher's
  representation is its tile embedding (tile tasks) or its expert's pooled slide embedding
  from the predictions file (slide tasks; the mean of its tile features if none was recorded).
* AdamW; the checkpoint and early stopping follow 0.8·balanced accuracy + 0.2·weighted F1 on
  the VALIDATION split (c-index for survival) — the published code stopped on the test set
  **[anchor defect]**.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pathfuse.fusion import FoldOutput
from pathfuse.fusion.blocks import Block
from pathfuse.fusion.context import FusionContext
from pathfuse.fusion.features import MultiBagDataset, TeacherFeatures, collate_multibags
from pathfuse.fusion.fitting import TensorBatches, block_targets, forward_flops, shazam_monitor, task_loss
from pathfuse.heads.abmil import GatedAttentionPool
from pathfuse.kinds import TaskKind
from pathfuse.training import count_parameters, fit, make_loader, predict

log = logging.getLogger(__name__)

#: Width of the attention branches of each teacher's ABMIL pooling (as in the experts).
POOL_ATTN_DIM = 128
#: Token mixers: Shazam's self-attention and the paper's two fusion ablations.
MIXERS = ("attention", "sum", "moe")


class AttentionBlock(nn.Module):
    """Single-head self-attention with a post-norm residual: LayerNorm(x + O(softmax(QKᵀ/√D)V))."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.query, self.key, self.value, self.out = (nn.Linear(dim, dim) for _ in range(4))
        self.norm = nn.LayerNorm(dim)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Mix the teacher tokens [B, N, D] with each other; the output has the same shape."""
        scores = self.query(tokens) @ self.key(tokens).transpose(1, 2) * self.scale
        return self.norm(tokens + self.out(torch.softmax(scores, dim=-1) @ self.value(tokens)))


def projection(in_dim: int, dim: int) -> nn.Sequential:
    """A teacher's token projection: Linear–LayerNorm–ReLU–Linear–LayerNorm–ReLU."""
    return nn.Sequential(nn.Linear(in_dim, dim), nn.LayerNorm(dim), nn.ReLU(),
                         nn.Linear(dim, dim), nn.LayerNorm(dim), nn.ReLU())


class Shazam(nn.Module):
    """The Shazam model.

    Args:
        in_dims: per teacher, the width of its input features (tiles).
        n_outputs: C classes or T hazard bins.
        dim: token width D.
        n_layers: attention blocks K.
        pool_hidden: slide tasks: width of each teacher's gated-ABMIL pooling; None for tiles.
        pool_dropout: dropout inside the pooling (slide tasks).
        target_dims: per teacher, the width of its distillation-target input; None = no targets.
        train_targets: whether the target maps are optimised (False: fixed random maps).
        mixer: how the teacher tokens become T_final: ``attention`` (Shazam: K self-attention
            blocks, then the mean), or the paper's fusion ablations ``sum`` (the sum of the
            tokens, no attention) and ``moe`` (a softmax gate over the concatenated tokens
            weights each teacher's token).
    """

    def __init__(
        self, in_dims: list[int], n_outputs: int, dim: int = 128, n_layers: int = 5,
        pool_hidden: int | None = None, pool_dropout: float = 0.25, target_dims: list[int] | None = None,
        train_targets: bool = True, mixer: str = "attention",
    ) -> None:
        super().__init__()
        if mixer not in MIXERS:
            raise ValueError(f"unknown Shazam mixer {mixer!r}; known: {', '.join(MIXERS)}")
        self.pools = None
        if pool_hidden:
            self.pools = nn.ModuleList(GatedAttentionPool(d, pool_hidden, POOL_ATTN_DIM, pool_dropout) for d in in_dims)
        token_in = [pool_hidden] * len(in_dims) if pool_hidden else in_dims
        self.projections = nn.ModuleList(projection(d, dim) for d in token_in)
        self.blocks = nn.ModuleList(AttentionBlock(dim) for _ in range(n_layers if mixer == "attention" else 0))
        self.gate = nn.Linear(len(in_dims) * dim, len(in_dims)) if mixer == "moe" else None
        self.classifier = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.LayerNorm(dim), nn.Linear(dim, n_outputs))
        self.targets = nn.ModuleList(nn.Linear(d, dim) for d in target_dims) if target_dims else None
        if self.targets is not None and not train_targets:
            self.targets.requires_grad_(False)
        self.n_outputs, self.dim, self.mixer = n_outputs, dim, mixer

    def fuse(self, features: list[torch.Tensor], masks: list[torch.Tensor] | None = None) -> torch.Tensor:
        """T_final [B, D] from the teachers' tiles [B, D_i] or bags [B, n, D_i] (+ masks)."""
        if self.pools is not None:
            pool_masks: Sequence[torch.Tensor | None] = masks or [None] * len(features)
            features = [pool(x, mask)[0] for pool, x, mask in zip(self.pools, features, pool_masks, strict=True)]
        tokens = torch.stack([proj(x) for proj, x in zip(self.projections, features, strict=True)], dim=1)
        if self.mixer == "sum":
            return tokens.sum(dim=1)
        if self.mixer == "moe":
            return (self.teacher_weights(tokens).unsqueeze(-1) * tokens).sum(dim=1)
        for block in self.blocks:
            tokens = block(tokens)
        return tokens.mean(dim=1)

    def teacher_weights(self, tokens: torch.Tensor) -> torch.Tensor:
        """MoE mixer: each sample's softmax weights [B, N] over its N teacher tokens [B, N, D]."""
        assert self.gate is not None, "teacher weights come from the moe mixer's gate"
        return torch.softmax(self.gate(tokens.flatten(1)), dim=-1)

    def forward(
        self, features: list[torch.Tensor], masks: list[torch.Tensor] | None = None,
        target_inputs: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Logits [B, C]; with ``target_inputs``, packed [logits | T_final | T_1 … T_N] for the loss."""
        fused = self.fuse(features, masks)
        logits = self.classifier(fused)
        if target_inputs is None or self.targets is None:
            return logits
        targets = [layer(x) for layer, x in zip(self.targets, target_inputs, strict=True)]
        return torch.cat([logits, fused, *targets], dim=1)


class ShazamLoss:
    """Task loss + λ·Σ_i [(1 − cos(T_final, T_i)) + Huber_δ(T_final, T_i)] on packed outputs."""

    def __init__(self, n_outputs: int, dim: int, kind: TaskKind, alpha: float, weight: float, delta: float) -> None:
        self.task = task_loss(kind, alpha)
        self.n_outputs, self.dim, self.weight, self.delta = n_outputs, dim, weight, delta

    def __call__(self, outputs: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        """The loss of packed ``outputs`` (:meth:`Shazam.forward`); plain logits get the task loss only."""
        logits = outputs[:, : self.n_outputs]
        loss = self.task(logits, batch)
        if outputs.shape[1] == self.n_outputs or self.weight == 0:
            return loss
        fused = outputs[:, self.n_outputs: self.n_outputs + self.dim]
        targets = outputs[:, self.n_outputs + self.dim:].split(self.dim, dim=1)
        distill = sum((1 - F.cosine_similarity(fused, t, dim=1)).mean()
                      + F.huber_loss(fused, t, delta=self.delta) for t in targets)
        return loss + self.weight * distill


# ----------------------------------------------------------------------------- data
def _uses_expert_embeddings(ctx: FusionContext, fold: int) -> bool:
    return all(b.embeddings is not None for key, b in ctx.blocks[fold].items() if not key[1])


def _tile_batches(feats: TeacherFeatures, block: Block, kind: TaskKind, batch_size: int, shuffle: bool,
                  seed: int, with_targets: bool) -> TensorBatches:
    inputs: dict[str, Any] = {"features": feats.tile_matrix(block)}
    if with_targets:
        inputs["target_inputs"] = inputs["features"]
    return TensorBatches(inputs, block_targets(block, kind), batch_size, shuffle=shuffle, seed=seed)


def _bag_loader(feats: TeacherFeatures, block: Block, kind: TaskKind, batch_size: int, shuffle: bool, seed: int,
                max_tiles: int | None, target_source: str | None):
    targets = {k: v.numpy() for k, v in block_targets(block, kind).items()}
    extras = None
    if target_source == "embedding":
        extras = {"target_inputs": [torch.as_tensor(e) for e in block.embeddings or []]}
    dataset = MultiBagDataset(feats, block.sample_id, targets, extras=extras, max_tiles=max_tiles, seed=seed)
    return make_loader(dataset, batch_size, shuffle=shuffle, seed=seed, collate_fn=collate_multibags)


def _mean_tiles_forward(model: nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
    """Slide tasks without expert embeddings: each teacher's target input is its mean tile."""
    inputs = batch["inputs"]
    means = [(x * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True)
             for x, m in zip(inputs["features"], inputs["masks"], strict=True)]
    return model(features=inputs["features"], masks=inputs["masks"], target_inputs=means)


def _logits_forward(model: nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
    inputs = batch["inputs"]
    return model(features=inputs["features"], masks=inputs.get("masks"))


# ----------------------------------------------------------------------------- fit one fold
def fit_fold(ctx: FusionContext, fold: int, mixer: str = "attention") -> FoldOutput:
    """Train Shazam (or an ablation, by ``mixer``) on one outer fold and predict every block.

    Training stops early on the validation block; the test block only gets predictions.
    """
    start = time.perf_counter()
    settings, kind = ctx.settings.shazam, ctx.task.kind_strategy
    feats: TeacherFeatures = ctx.features
    train, val = ctx.block(fold, "train"), ctx.block(fold, "val")
    seed = ctx.seed("shazam", fold)
    torch.manual_seed(seed)
    n_outputs = train.logits.shape[2]
    distill = settings.distill_target != "none" and settings.distill_weight > 0
    slide = feats.is_slide
    target_source = None
    if distill:
        target_source = ("embedding" if slide and _uses_expert_embeddings(ctx, fold)
                         else "mean_tiles" if slide else "tile")
        if target_source == "mean_tiles":
            log.warning("task %s fold %d: the experts recorded no slide embeddings; Shazam distils toward "
                        "each teacher's mean tile feature instead", ctx.task.id, fold)
    target_dims = None
    if distill:
        if target_source == "embedding":
            assert train.embeddings is not None  # _uses_expert_embeddings checked every in-fold block
            target_dims = [e.shape[1] for e in train.embeddings]
        else:
            target_dims = feats.dims
    model = Shazam(feats.dims, n_outputs, settings.dim, settings.n_layers, settings.abmil_hidden if slide else None,
                   settings.abmil_dropout, target_dims, train_targets=settings.distill_target == "linear", mixer=mixer)
    loss = ShazamLoss(n_outputs, settings.dim, kind, ctx.settings.survival_alpha, settings.distill_weight,
                      settings.huber_delta)
    if slide:
        bs, tiles = settings.bag_batch_size, settings.max_tiles
        train_data = _bag_loader(feats, train, kind, bs, True, seed, tiles, target_source)
        val_data = _bag_loader(feats, val, kind, bs, False, seed, None, target_source)
    else:
        train_data = _tile_batches(feats, train, kind, settings.batch_size, True, seed, distill)
        val_data = _tile_batches(feats, val, kind, max(len(val), 1), False, seed, distill)
    train_forward = _mean_tiles_forward if target_source == "mean_tiles" else _default_forward
    monitor, mode, metric_fn = shazam_monitor(ctx, val, fold, lambda out: out[:, :n_outputs])
    result = fit(model, train_data, val_data, loss, epochs=settings.max_epochs, lr=settings.lr,
                 weight_decay=settings.weight_decay, patience=settings.patience, monitor=monitor, mode=mode,
                 seed=seed, metric_fn=metric_fn, forward=train_forward, optimizer="adamw", scheduler="none")
    train_seconds = time.perf_counter() - start

    logits = {}
    for key, block in ctx.blocks[fold].items():
        if key[1]:
            continue  # out-of-fold rows are an expert-level notion; Shazam has one model per fold
        data = (_bag_loader(feats, block, kind, settings.bag_batch_size, False, seed, None, None) if slide
                else _tile_batches(feats, block, kind, 4096, False, seed, False))
        logits[key] = predict(model, data, _logits_forward)[0].numpy()
    first_val = next(iter(_bag_loader(feats, val, kind, settings.bag_batch_size, False, seed, None, None) if slide
                          else _tile_batches(feats, val, kind, 256, False, seed, False)))
    cost = {
        "train_seconds": train_seconds, "params": count_parameters(model),
        "flops": forward_flops(model, lambda: _logits_forward(model, first_val), len(first_val["index"])),
        "best_epoch": result.best_epoch, "epochs_run": len(result.curve), "monitor": result.monitor,
        "best_value": result.best_value, "distill_target": settings.distill_target if distill else "none",
        "distill_input": target_source, "mixer": mixer,
    }
    return FoldOutput(logits=logits, cost=cost)


def _default_forward(model: nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
    return model(**batch["inputs"])

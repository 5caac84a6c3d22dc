"""shazam_levels: Shazam as its authors' current public code runs it — three depths per teacher.

Formulation (METHODS.md §4, current public code; every open choice in docs/methods.md):

* Each teacher i gives three level features: low and mid (its low and mid blocks' outputs, under
  the FM's own token rule; :mod:`pathfuse.encoders.levels`) and high (its embedding). Each
  (teacher, level) has its own projection Linear(D_i→D)–LayerNorm–ReLU–Linear(D→D)–LayerNorm–ReLU.
* Per level ℓ, a softmax gate over the N projected teachers: Linear(N·D→H)–LayerNorm–GELU–
  Dropout(0.1)–Linear(H→N); each token is scaled by N·w_i (a uniform gate leaves it unchanged).
* Three segments of K = 4 Shazam attention blocks (single head, post-norm residual, no FFN):
  h_low = S_low(g_low), h_mid = S_mid(g_mid + h_low), h_high = S_high(g_high + h_mid).
  T_ℓ = mean over tokens of h_ℓ; the classifier reads T_high.
* Loss = task loss + λ·Σ_ℓ Σ_i [(1 − cos(T_ℓ, T_iℓ)) + Huber_δ(T_ℓ, T_iℓ)] with T_iℓ a trainable
  Linear(D_i → D) of teacher i's level-ℓ feature (``distill_target``, as paper Shazam); λ = 0.2.
* AdamW; checkpoint and early stopping on 0.5·balanced accuracy + 0.5·weighted F1 of the
  VALIDATION split — the public tile script stops on the test split **[anchor defect]**.

Tile tasks only: on slide tasks the method is not applicable (its registry entry says why).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

from pathfuse.encoders.levels import LEVEL_NAMES, LEVELS_KEY, N_LEVELS
from pathfuse.fusion import FUSERS, FoldOutput
from pathfuse.fusion.blocks import Block
from pathfuse.fusion.context import FusionContext
from pathfuse.fusion.features import FeatureError
from pathfuse.fusion.fitting import TensorBatches, block_targets, forward_flops, scored_monitor, task_loss
from pathfuse.fusion.shazam import AttentionBlock, projection
from pathfuse.kinds import TaskKind
from pathfuse.training import count_parameters, fit, predict

#: The public code's model choice: 0.5·balanced accuracy + 0.5·weighted F1 (here on validation).
LEVELS_SCORE = ("0.5*bal_acc+0.5*w_f1", {"balanced_accuracy": 0.5, "weighted_f1": 0.5})


class LevelGate(nn.Module):
    """One level's softmax gate over its N projected teachers: MLP(N·D → H → N), GELU, dropout."""

    def __init__(self, n_teachers: int, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(n_teachers * dim, hidden), nn.LayerNorm(hidden), nn.GELU(),
                                 nn.Dropout(dropout), nn.Linear(hidden, n_teachers))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Softmax weights [B, N] of the tokens [B, N, D]."""
        return torch.softmax(self.mlp(tokens.flatten(1)), dim=-1)


class ShazamLevels(nn.Module):
    """Level gates and three attention segments joined low → mid → high by residuals.

    Args:
        in_dims: per teacher, the width of its features (the same at every level).
        n_outputs: C classes.
        dim: token width D.
        layers_per_level: attention blocks K per segment.
        gate_hidden: H, the gates' hidden width.
        gate_dropout: dropout inside the gates.
        target_dims: per teacher, the width of its distillation-target input; None = no targets.
        train_targets: whether the target maps are optimised (False: fixed random maps).
    """

    def __init__(self, in_dims: list[int], n_outputs: int, dim: int = 128, layers_per_level: int = 4,
                 gate_hidden: int = 128, gate_dropout: float = 0.1, target_dims: list[int] | None = None,
                 train_targets: bool = True) -> None:
        super().__init__()
        n = len(in_dims)
        # Level-major, as the inputs: every teacher's low projection, then mid, then high.
        self.projections = nn.ModuleList(projection(d, dim) for _ in range(N_LEVELS) for d in in_dims)
        self.gates = nn.ModuleList(LevelGate(n, dim, gate_hidden, gate_dropout) for _ in range(N_LEVELS))
        self.segments = nn.ModuleList(nn.Sequential(*(AttentionBlock(dim) for _ in range(layers_per_level)))
                                      for _ in range(N_LEVELS))
        self.classifier = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.LayerNorm(dim), nn.Linear(dim, n_outputs))
        self.targets = None
        if target_dims:
            self.targets = nn.ModuleList(nn.Linear(d, dim) for _ in range(N_LEVELS) for d in target_dims)
            self.targets.requires_grad_(train_targets)
        self.n_teachers, self.n_outputs, self.dim = n, n_outputs, dim

    def levels(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per level T_ℓ [B, D] (low, mid, high) and the gate weights [B, 3·N] (level-major).

        ``features`` are level-major: the N teachers' low features, then mid, then high.
        """
        n, summaries, weights, carried = self.n_teachers, [], [], None
        for level in range(N_LEVELS):
            tokens = torch.stack([self.projections[i](features[i]) for i in range(level * n, (level + 1) * n)], dim=1)
            w = self.gates[level](tokens)
            tokens = tokens * (n * w).unsqueeze(-1)
            if carried is not None:
                tokens = tokens + carried
            tokens = self.segments[level](tokens)
            carried = tokens
            summaries.append(tokens.mean(dim=1))
            weights.append(w)
        return summaries, torch.cat(weights, dim=1)

    def forward(self, features: list[torch.Tensor], target_inputs: list[torch.Tensor] | None = None,
                with_gates: bool = False) -> torch.Tensor:
        """Logits [B, C]; with ``target_inputs`` packed [logits | T_low | T_mid | T_high | targets…].

        With ``with_gates``: [logits | gate weights] (what the predictions record).
        """
        summaries, weights = self.levels(features)
        logits = self.classifier(summaries[-1])
        if with_gates:
            return torch.cat([logits, weights], dim=1)
        if target_inputs is None or self.targets is None:
            return logits
        targets = [layer(x) for layer, x in zip(self.targets, target_inputs, strict=True)]
        return torch.cat([logits, *summaries, *targets], dim=1)


class LevelsLoss:
    """Task loss + λ·Σ_ℓ Σ_i [(1 − cos(T_ℓ, T_iℓ)) + Huber_δ(T_ℓ, T_iℓ)] on packed outputs."""

    def __init__(self, n_outputs: int, n_teachers: int, dim: int, kind: TaskKind, alpha: float, weight: float,
                 delta: float) -> None:
        self.task = task_loss(kind, alpha)
        self.n_outputs, self.n_teachers, self.dim, self.weight, self.delta = n_outputs, n_teachers, dim, weight, delta

    def __call__(self, outputs: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        """The loss of packed outputs (:meth:`ShazamLevels.forward`); plain logits get the task loss only."""
        loss = self.task(outputs[:, : self.n_outputs], batch)
        if outputs.shape[1] == self.n_outputs or self.weight == 0:
            return loss
        parts = outputs[:, self.n_outputs:].split(self.dim, dim=1)
        summaries, targets = parts[:N_LEVELS], parts[N_LEVELS:]
        distill = sum((1 - F.cosine_similarity(summaries[i // self.n_teachers], t, dim=1)).mean()
                      + F.huber_loss(summaries[i // self.n_teachers], t, delta=self.delta)
                      for i, t in enumerate(targets))
        return loss + self.weight * distill


# ----------------------------------------------------------------------------- data
def level_matrices(ctx: FusionContext, block: Block) -> list[torch.Tensor]:
    """The block's level features, level-major (every teacher's low, then mid, then high), float32 [N, D_i]."""
    feats = ctx.features
    highs = feats.tile_matrix(block)
    lower: list[list[torch.Tensor]] = [[], []]
    for m, encoder in enumerate(feats.encoders):
        path = ctx.cfg.layout.tile_features(encoder, ctx.task.dataset or "")
        with safe_open(str(path), framework="pt") as fh:
            keys = fh.keys()  # a safetensors handle has no __contains__
            if LEVELS_KEY not in keys:
                raise FeatureError(f"encoder {encoder}: {path} has no level features; shazam_levels reads them: set "
                                   "embedding.levels: tiles (or true) and rerun the embedding")
            levels = fh.get_tensor(LEVELS_KEY)
        assert feats.rows is not None
        rows = torch.as_tensor([feats.rows[m][s] for s in block.sample_id])
        for k in range(N_LEVELS - 1):
            lower[k].append(levels[rows, k].float())
    return [*lower[0], *lower[1], *highs]


def _batches(ctx: FusionContext, block: Block, batch_size: int, shuffle: bool, seed: int,
             with_targets: bool) -> TensorBatches:
    inputs: dict[str, Any] = {"features": level_matrices(ctx, block)}
    if with_targets:
        inputs["target_inputs"] = inputs["features"]
    return TensorBatches(inputs, block_targets(block, ctx.task.kind_strategy), batch_size, shuffle=shuffle, seed=seed)


def _gated_forward(model: nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
    return model(features=batch["inputs"]["features"], with_gates=True)


def _default_forward(model: nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
    return model(**batch["inputs"])


# ----------------------------------------------------------------------------- fit one fold
def fit_fold(ctx: FusionContext, fold: int) -> FoldOutput:
    """Train shazam_levels on one outer fold (tile task) and predict its train, val and test blocks.

    The validation block alone chooses the checkpoint and stops training; the test block is only
    predicted, after training, by the chosen model.
    """
    start = time.perf_counter()
    settings, kind = ctx.settings.shazam_levels, ctx.task.kind_strategy
    if ctx.features.is_slide:
        raise FeatureError(f"task {ctx.task.id}: shazam_levels is not applicable: "
                           f"{FUSERS.get('shazam_levels').not_on_slides}")
    train, val = ctx.block(fold, "train"), ctx.block(fold, "val")
    seed = ctx.seed("shazam_levels", fold)
    torch.manual_seed(seed)
    n_outputs, dims = train.logits.shape[2], ctx.features.dims
    distill = settings.distill_target != "none" and settings.distill_weight > 0
    model = ShazamLevels(dims, n_outputs, settings.dim, settings.layers_per_level, settings.gate_hidden,
                         settings.gate_dropout, dims if distill else None,
                         train_targets=settings.distill_target == "linear")
    loss = LevelsLoss(n_outputs, len(dims), settings.dim, kind, ctx.settings.survival_alpha, settings.distill_weight,
                      settings.huber_delta)
    train_data = _batches(ctx, train, settings.batch_size, True, seed, distill)
    val_data = _batches(ctx, val, max(len(val), 1), False, seed, distill)
    name, weights = LEVELS_SCORE
    monitor, mode, metric_fn = scored_monitor(ctx, val, fold, name, weights, lambda out: out[:, :n_outputs])
    result = fit(model, train_data, val_data, loss, epochs=settings.max_epochs, lr=settings.lr,
                 weight_decay=settings.weight_decay, patience=settings.patience, monitor=monitor, mode=mode,
                 seed=seed, metric_fn=metric_fn, forward=_default_forward, optimizer="adamw", scheduler="none")
    train_seconds = time.perf_counter() - start

    logits, gates = {}, {}
    for key, block in ctx.blocks[fold].items():
        if key[1]:
            continue  # out-of-fold rows are an expert-level notion; one model per fold here
        out = predict(model, _batches(ctx, block, 4096, False, seed, False), _gated_forward)[0].numpy()
        logits[key], gates[key] = out[:, :n_outputs], out[:, n_outputs:]
    first_val = next(iter(_batches(ctx, val, 256, False, seed, False)))
    cost = {
        "train_seconds": train_seconds, "params": count_parameters(model),
        "flops": forward_flops(model, lambda: _default_forward(model, first_val), len(first_val["index"])),
        "best_epoch": result.best_epoch, "epochs_run": len(result.curve), "monitor": result.monitor,
        "best_value": result.best_value, "distill_target": settings.distill_target if distill else "none",
        "levels": list(LEVEL_NAMES),
    }
    return FoldOutput(logits=logits, cost=cost, gate_weights=gates)

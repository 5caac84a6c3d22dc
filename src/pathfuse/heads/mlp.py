"""The 3-layer MLP probe for tile-classification tasks (METHODS.md §2).

Linear(in→128)–LayerNorm–GELU–Linear(128→128)–LayerNorm–GELU–Linear(128→C): a probe just
deep enough to read non-linear class structure from a frozen embedding without fine-tuning it.
"""

from __future__ import annotations

import torch
from torch import nn

from pathfuse.heads.registry import HEADS, HeadRecipe


class MLPProbe(nn.Module):
    """Tile features [B, in_dim] → class logits [B, n_outputs]."""

    def __init__(self, in_dim: int, n_outputs: int, hidden: int = 128, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.LayerNorm(hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.LayerNorm(hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_outputs),
        )

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask`` is accepted (and ignored) so tile and slide heads share one call signature."""
        return self.net(features)

    def flops(self, n_tiles: int = 1) -> int:
        """Forward FLOPs of the linear layers for one tile."""
        return sum(2 * m.in_features * m.out_features for m in self.net if isinstance(m, nn.Linear))


@HEADS.register("mlp")
def mlp(in_dim: int, n_outputs: int, recipe: HeadRecipe | None = None) -> MLPProbe:
    """The tile-task MLP probe."""
    return MLPProbe(in_dim, n_outputs) if recipe is None else MLPProbe(in_dim, n_outputs, dropout=recipe.dropout)

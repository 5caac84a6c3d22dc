"""Expert heads trained on frozen foundation-model embeddings, selected by name from config.

``HEADS`` maps a head name (the ``head`` key of an ``experts.heads.<kind>`` config block) to a
builder ``(in_dim, n_outputs, **kwargs) -> nn.Module``. Every head's ``forward`` returns logits
of shape [B, n_outputs]; slide heads also expose ``pool`` (the pooled slide embedding that
Shazam consumes) so that callers never have to reach into a head's layers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from pathfuse.registry import Registry

HEADS: Registry[Callable[..., nn.Module]] = Registry("head")


def build_head(name: str, in_dim: int, n_outputs: int, **kwargs: Any) -> nn.Module:
    """Build the head registered as ``name`` for ``in_dim`` features and ``n_outputs`` logits."""
    return HEADS.get(name)(in_dim=in_dim, n_outputs=n_outputs, **kwargs)


# Registration happens on import; keep these after HEADS is defined.
from pathfuse.heads import abmil as abmil
from pathfuse.heads import mlp as mlp

__all__ = ["HEADS", "build_head"]

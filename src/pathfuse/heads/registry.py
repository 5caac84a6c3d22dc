"""The head registry: a head's name (the ``head`` of an ``experts.heads.<kind>`` recipe) → its builder.

A builder is ``(in_dim, n_outputs, recipe) -> nn.Module``: ``recipe`` is the typed expert recipe
(:class:`pathfuse.settings.ClassificationHead`, :class:`~pathfuse.settings.SurvivalHead` or
:class:`~pathfuse.settings.TileHead`) whose architecture settings (``dropout``) the head takes,
or None for the head's own defaults (the concat baseline builds its head without a recipe).
Every head's ``forward`` returns logits of shape [B, n_outputs]; slide heads also expose
``pool`` (the pooled slide embedding that Shazam consumes) so callers never reach into a
head's layers.

The registry has its own module so that the implementations (:mod:`pathfuse.heads.abmil`,
:mod:`pathfuse.heads.mlp`) register into it without importing the package that imports them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

from torch import nn

from pathfuse.registry import Registry
from pathfuse.settings import ClassificationHead, SurvivalHead, TileHead

#: An expert recipe of any task kind (``experts.heads.<kind>``).
HeadRecipe: TypeAlias = ClassificationHead | SurvivalHead | TileHead
HeadBuilder: TypeAlias = Callable[[int, int, HeadRecipe | None], nn.Module]

HEADS: Registry[HeadBuilder] = Registry("head")


def build_head(name: str, in_dim: int, n_outputs: int, recipe: HeadRecipe | None = None) -> nn.Module:
    """Build the head registered as ``name`` for ``in_dim`` features and ``n_outputs`` logits.

    ``recipe`` carries the architecture settings of ``experts.heads`` (None: the head's defaults).
    """
    return HEADS.get(name)(in_dim, n_outputs, recipe)

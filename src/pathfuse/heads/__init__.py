"""Expert heads trained on frozen foundation-model embeddings, selected by name from config.

:data:`HEADS` (:mod:`pathfuse.heads.registry`) maps a head name to its builder; importing this
package registers the built-in heads (gated ABMIL for slide tasks, the MLP probe for tile tasks).
"""

from __future__ import annotations

from pathfuse.heads import abmil as abmil
from pathfuse.heads import mlp as mlp
from pathfuse.heads.registry import HEADS, HeadBuilder, HeadRecipe, build_head

__all__ = ["HEADS", "HeadBuilder", "HeadRecipe", "build_head"]

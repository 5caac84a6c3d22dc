"""How many inner folds an expert job trains: the out-of-fold logits some fusion methods learn from."""

from __future__ import annotations

from pathfuse.config import Config
from pathfuse.fusion import FUSERS


def inner_folds_needed(cfg: Config) -> int:
    """Inner folds to train per outer fold: ``experts.inner_folds`` when a fusion method needs them, else 0.

    A method needs them when it reads out-of-fold expert logits (``Method.needs_oof``: LogitProd,
    stacking). The inner experts cost ``inner_folds`` extra expert trainings per outer fold; a run whose
    methods never read out-of-fold rows should not pay for them.
    """
    needed = any(FUSERS.get(m).needs_oof for m in cfg.settings.fusion.methods if m in FUSERS)
    return cfg.settings.experts.inner_folds if needed else 0

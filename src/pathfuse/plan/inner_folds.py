"""How many inner folds an expert job trains: the out-of-fold logits some fusion methods learn from."""

from __future__ import annotations

from pathfuse.config import Config
from pathfuse.fusion import FUSERS, reads_oof


def inner_folds_needed(cfg: Config) -> int:
    """Inner folds to train per outer fold: ``experts.inner_folds`` when a fusion method needs them, else 0.

    A method needs them when it reads out-of-fold logits (:func:`pathfuse.fusion.reads_oof`: LogitProd,
    logitprod_converged, stacking with ``train_on: oof``). They cost ``inner_folds`` expert trainings per
    outer fold; a run whose methods never read out-of-fold rows (e.g. all learn from ``val``) does not pay.
    """
    fusion = cfg.settings.fusion
    needed = any(reads_oof(m, fusion) for m in fusion.methods if m in FUSERS)
    return cfg.settings.experts.inner_folds if needed else 0

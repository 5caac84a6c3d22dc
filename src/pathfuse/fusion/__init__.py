"""Stage 2b: fusers (LogitProd, Shazam) and baselines on top of the frozen experts.

Every method is registered in :data:`FUSERS` under the name the config's ``fusion.methods``
uses. A method is a :class:`Method`: its family (fuser | baseline | oracle) and a function that
fits it on one outer fold and predicts every row of that fold. ``pathfuse.fusion.run`` loops
over methods and folds and writes one predictions file per method, in the experts' shape, so
one evaluation code path scores experts and fusers alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from pathfuse.registry import Registry

if TYPE_CHECKING:
    from pathfuse.fusion.inputs import FusionContext

#: A block of prediction rows: (split, oof) within one fold.
BlockKey = tuple[str, bool]


@dataclass
class FoldOutput:
    """What a method returns for one fold.

    Attributes:
        logits: per block, [N, K] logits in the contract's sense (class logits, or T hazard
            logits for survival), rows in the order of the context's block.
        cost: train_seconds, params, flops (forward FLOPs per sample, or None), best_epoch,
            plus any method-specific facts (e.g. the chosen expert); stored in the metadata.
        gate_weights: LogitProd only, per block [N, G·M] (G = T+1 bins for survival, else 1).
    """

    logits: dict[BlockKey, np.ndarray]
    cost: dict[str, Any]
    gate_weights: dict[BlockKey, np.ndarray] | None = None


@dataclass(frozen=True)
class Method:
    """A registered method: its family and how to fit and predict one fold."""

    family: str
    fit_fold: Callable[[FusionContext, int], FoldOutput]
    needs_features: bool = False
    needs_oof: bool = False  # reads the experts' out-of-fold logits: the inner-fold experts are trained for it
    description: str = ""
    settings: str | None = None  # the config block under `fusion` it reads; None = its own name


FUSERS: Registry[Method] = Registry("fusion method")


# Registration happens on import; keep these after FUSERS is defined.
from pathfuse.fusion import baselines as baselines
from pathfuse.fusion import concat as concat
from pathfuse.fusion import logitprod as logitprod
from pathfuse.fusion import logitprod_converged as logitprod_converged
from pathfuse.fusion import shazam as shazam

__all__ = ["FUSERS", "BlockKey", "FoldOutput", "Method"]

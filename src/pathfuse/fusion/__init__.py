"""Stage 2b: fusers (LogitProd, Shazam) and baselines on top of the frozen experts.

Every method is registered in :data:`FUSERS` under the name the config's ``fusion.methods``
uses. A method is a :class:`Method`: its family (fuser | baseline | oracle) and a function that
fits it on one outer fold and predicts every row of that fold. ``pathfuse.fusion.run`` loops
over methods and folds and writes one predictions file per method, in the experts' shape, so
one evaluation code path scores experts and fusers alike. A lab adds its own method through the
entry-point group ``pathfuse.fusers`` (name = the method, object = a :class:`Method`); config
validation accepts every registered name (docs/architecture.md, Extending pathfuse).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import numpy as np

from pathfuse.registry import Registry

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
        model: what the fitted fold keeps to predict rows it never saw (an external cohort, new
            slides) through the method's ``apply`` function: JSON-able numbers and lists, saved
            beside the predictions (``fusion/{task}/{method}/model.json``). None: not kept.
    """

    logits: dict[BlockKey, np.ndarray]
    cost: dict[str, Any]
    gate_weights: dict[BlockKey, np.ndarray] | None = None
    model: dict[str, Any] | None = None


@dataclass(frozen=True)
class Method:
    """A registered method: its family, what it reads, and where its fold function is.

    The function is named as ``"module:function"`` and imported on first use, so the registry
    itself is light: the workflow plans jobs from these declarations (e.g. whether the
    inner-fold experts are needed) without importing torch.
    """

    family: str
    target: str  # "package.module:function" with signature (FusionContext, fold, **options) -> FoldOutput
    needs_features: bool = False
    # May read the experts' out-of-fold logits: the inner-fold experts are trained for it unless its
    # settings block has a ``train_on`` other than "oof" (see :func:`reads_oof`).
    needs_oof: bool = False
    description: str = ""
    settings: str | None = None  # the config block under `fusion` it reads; None = its own name
    options: Mapping[str, Any] = field(default_factory=dict)  # keyword arguments bound to the function
    # Further settings it reads, as dotted paths from the config root (e.g. "report.primary_metric"):
    # with its block, `fusion.survival_alpha` and `options` they make its rerun digest (pathfuse.plan).
    reads: tuple[str, ...] = ()
    needs_levels: bool = False  # reads the teachers' level features (embedding.levels; start-up check)
    # Why it does not run on slide tasks ("" = it does); such a (task, method) is reported, not fitted.
    not_on_slides: str = ""

    def not_applicable(self, is_slide_task: bool) -> str | None:
        """Why this method does not run on a task of this kind, or None when it does."""
        return self.not_on_slides if is_slide_task and self.not_on_slides else None
    # "module:function" (task: TaskSpec, model: dict, logits [N, M, K]) -> (logits [N, K], gate weights or None):
    # a fitted fold's ``FoldOutput.model`` applied to expert logits it never saw (external cohorts,
    # ``pathfuse predict``). None: the method cannot predict new rows; ``no_apply`` says why.
    apply: str | None = None
    no_apply: str = "the method keeps no fitted model to apply to new slides"

    @property
    def fit_fold(self) -> Callable[..., FoldOutput]:
        """The fold function (imported now)."""
        return _imported(self.target, self.options)

    @property
    def apply_fold(self) -> Callable[..., tuple[np.ndarray, np.ndarray | None]]:
        """The apply function (imported now); only for methods that declare one."""
        if self.apply is None:
            raise ValueError(self.no_apply)
        return _imported(self.apply, {})


def _imported(target: str, options: Mapping[str, Any]) -> Callable[..., Any]:
    """The function named ``"module:function"``, with ``options`` bound."""
    module, name = target.split(":")
    function = getattr(importlib.import_module(module), name)
    return functools.partial(function, **options) if options else function


FUSERS: Registry[Method] = Registry("fusion method")


def reads_oof(name: str, fusion: Any) -> bool:
    """Whether method ``name`` reads out-of-fold expert logits under the ``fusion`` settings.

    A method declaring ``needs_oof`` reads them unless its settings block says otherwise:
    a ``train_on`` of ``val`` or ``in_sample`` (LogitProd, logitprod_converged, stacking) learns
    from rows every expert job writes anyway, so no inner-fold expert is trained for it.
    ``fusion`` is the run's typed ``fusion`` settings (:class:`pathfuse.settings.FusionSettings`).
    """
    spec = FUSERS.get(name)
    if not spec.needs_oof:
        return False
    block = getattr(fusion, spec.settings or name, None)
    return getattr(block, "train_on", "oof") == "oof"

_FEATURE_LEVEL = ("reads the teachers' tile features: feature-level methods are not yet applied to new "
                  "slides (their fitted networks are not kept)")
_BUILT_IN: dict[str, Method] = {
    "logitprod": Method("fuser", "pathfuse.fusion.logitprod_fold:fit_fold", needs_oof=True,
                        apply="pathfuse.fusion.apply:gate",
                        description="per-sample gated product of the experts' distributions (logits only)"),
    "logitprod_converged": Method(
        "fuser", "pathfuse.fusion.logitprod_converged:fit_fold", needs_oof=True,
        apply="pathfuse.fusion.apply:gate",
        reads=("fusion.logitprod.corr_shrinkage",),
        description="LogitProd's gate fitted to convergence "
                    "(full-batch L-BFGS; λ, weight decay chosen on validation)"),
    "shazam": Method("fuser", "pathfuse.fusion.shazam:fit_fold", needs_features=True,
                     no_apply=_FEATURE_LEVEL,
                     description="teacher tokens + self-attention + distillation (feature-level fusion)"),
    "shazam_sum": Method("fuser", "pathfuse.fusion.shazam:fit_fold", needs_features=True,
                     no_apply=_FEATURE_LEVEL, settings="shazam",
                         options={"mixer": "sum"},
                         description="Shazam's Sum ablation: the teacher tokens summed, no attention "
                                     "(settings of shazam)"),
    "shazam_moe": Method("fuser", "pathfuse.fusion.shazam:fit_fold", needs_features=True,
                     no_apply=_FEATURE_LEVEL, settings="shazam",
                         options={"mixer": "moe"},
                         description="Shazam's MoE ablation: a softmax gate over the teacher tokens "
                                     "(settings of shazam)"),
    "shazam_levels": Method(
        "fuser", "pathfuse.fusion.shazam_levels:fit_fold", needs_features=True, needs_levels=True,
        no_apply=_FEATURE_LEVEL,
        not_on_slides="tile tasks only: each (teacher, level) bag would need its own ABMIL pooling (3x Shazam's "
                      "per step) over level features that triple the slide feature storage (docs/methods.md)",
        description="Shazam with low/mid/high teacher levels, a gate per level, residual-joined attention "
                    "segments, distillation per level (the authors' current code)"),
    "concat": Method("baseline", "pathfuse.fusion.concat:fit_fold", needs_features=True,
                     no_apply=_FEATURE_LEVEL,
                     description="concatenated teacher features + one head (MLP probe or gated ABMIL)"),
    "best_val_expert": Method("baseline", "pathfuse.fusion.baselines:best_val_expert",
                              apply="pathfuse.fusion.apply:chosen_expert",
                              reads=("report.primary_metric",),
                              description="single expert chosen per fold on validation"),
    "oracle_expert": Method("oracle", "pathfuse.fusion.baselines:oracle_expert", reads=("report.primary_metric",),
                            no_apply="the oracle chooses its expert on test labels, which new slides do not have",
                            description="single expert chosen per fold on TEST (not a method)"),
    "mean_logits": Method("baseline", "pathfuse.fusion.baselines:mean_logits",
                          apply="pathfuse.fusion.apply:mean_logits",
                          description="mean of the experts' logits"),
    "mean_probs": Method("baseline", "pathfuse.fusion.baselines:mean_probs",
                         apply="pathfuse.fusion.apply:mean_probs",
                         description="mean of the experts' distributions"),
    "stacking": Method("baseline", "pathfuse.fusion.baselines:stacking", needs_oof=True,
                       apply="pathfuse.fusion.apply:stacking",
                       description="linear stacker on the experts' outputs (out-of-fold by default)"),
}
for _name, _method in _BUILT_IN.items():
    FUSERS.register(_name)(_method)
for _plugin in entry_points(group="pathfuse.fusers"):  # a lab's own methods, without forking
    FUSERS.register(_plugin.name)(_plugin.load())

def applicable_methods(methods: list[str] | tuple[str, ...], is_slide_task: bool) -> list[str]:
    """The methods of ``methods`` that run on a task of this kind (the others are reported not applicable)."""
    return [m for m in methods if FUSERS.get(m).not_applicable(is_slide_task) is None]


__all__ = ["FUSERS", "BlockKey", "FoldOutput", "Method", "applicable_methods", "reads_oof"]

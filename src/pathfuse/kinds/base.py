"""The task-kind strategy: every decision that differs between, e.g., classification and survival.

A task's ``kind`` (tasks registry) names a :class:`TaskKind` in :data:`pathfuse.kinds.KINDS`.
Code that used to compare the kind name with ``"survival"`` asks the kind instead, so a new
kind (a lab's plug-in, registered under the entry-point group ``pathfuse.kinds``) is one class,
not edits across every stage.

This module is light on purpose: :mod:`pathfuse.config` (and so the Snakefile's start-up and
the slide-tiling env, which has no torch) imports it. What needs torch — targets as tensors,
the loss, the validation monitors — is the kind's :class:`KindTraining`, named by
``TaskKind.training_rules`` as ``"module:Class"`` and imported on first use (the pattern of
:class:`pathfuse.fusion.Method`); the built-in ones live in :mod:`pathfuse.heads.kind_training`.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from pathfuse.registry import Registry

if TYPE_CHECKING:
    import pandas as pd

#: ``(outputs, batch) -> loss tensor``, and ``(outputs, targets) -> validation score``.
LossFn = Callable[[Any, Mapping[str, Any]], Any]
MonitorFn = Callable[[Any, Mapping[str, Any]], float]


class TaskFacts(Protocol):
    """The registry facts of a task that kinds read; :class:`pathfuse.config.TaskSpec` has them.

    A protocol, not the config class: :mod:`pathfuse.config` imports the kinds, so they must
    not import it back.
    """

    @property
    def classes(self) -> tuple[Any, ...]:
        """The class values of a classification task (empty for survival)."""

    @property
    def label_column(self) -> str | None:
        """The label table's column holding the class (classification)."""

    @property
    def time_column(self) -> str | None:
        """The label table's follow-up time column (survival)."""

    @property
    def censorship_column(self) -> str | None:
        """The label table's censorship column (survival)."""

    @property
    def n_bins(self) -> int:
        """Hazard bins of a survival task."""

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metrics the registry asks for."""


class KindTraining(Protocol):
    """The torch side of a kind: what heads and trainable fusers learn from, and how.

    Tensors are typed ``Any`` so that this protocol stays importable without torch.
    """

    def targets(self, samples: pd.DataFrame, edges: np.ndarray | None) -> dict[str, np.ndarray]:
        """Target arrays aligned with ``samples`` (rows of ``load_samples``).

        ``edges`` are the fold's survival bin edges, for kinds that bin times.
        """

    def block_targets(self, block: Any) -> dict[str, Any]:
        """Target tensors of a fusion block (:class:`pathfuse.fusion.inputs.Block`)."""

    def loss(self, alpha: float = 0.4, class_weights: Any = None) -> LossFn:
        """``(outputs, batch) -> loss`` for :func:`pathfuse.training.fit`."""

    def monitor(self, name: str) -> MonitorFn:
        """A per-sample validation score for checkpoint choice; KeyError for an unknown name."""

    def log_distribution(self, logits: Any) -> Any:
        """Logits [..., K] → a log-distribution over the kind's outcomes (what LogitProd fuses)."""

    def output_logits(self, log_q: Any) -> Any:
        """A (fused) log-distribution → the kind's logits; the inverse of :meth:`log_distribution`."""


class TaskKind:
    """What one task kind decides; subclass it and register it in :data:`pathfuse.kinds.KINDS`.

    Class attributes (facts of the kind, the same for every task of it):
        slide: slide tasks pool tile features into bags (a cohort); tile tasks classify tiles (a dataset).
        time_to_event: outputs are hazard logits over the fold's time bins, so bin edges travel
            with the predictions and fusers combine event distributions over T+1 outcomes.
        has_classes: outputs are per class, and predictions record the class names.
        metrics: metric names a task of this kind may request (``pathfuse.evaluation.metrics`` computes them).
        target_columns: the sample columns that hold a sample's target (e.g. one label per patient).
        stratify_by: the per-sample or per-unit field whose value stratifies splits and the
            per-fold bootstrap (the class, or the event indicator).
        undefined_reason: why a metric can have no value on a test set (the metrics table's note).
        default_monitor: the experts' validation monitor when the config names none.
        early_stopping_score: (name, metric → weight) that fusers stop on, scored per patient
            on validation; None: they stop on their validation loss.
        training_rules: ``"module:Class"`` (or the class) implementing :class:`KindTraining`.
        label: the kind's short name beside its group of tasks in the report's figures
            (empty: the name it is registered under).

    What the experts and each fusion method ask of a kind (a new kind provides these):

    * experts: ``n_outputs``, ``label_columns``; ``training()``'s ``targets``, ``loss`` and
      ``monitor`` (the names its ``experts.heads.<kind>`` recipe may choose); ``has_classes``
      (a fold missing a class is refused, predictions record the class names);
      ``time_to_event`` (bin edges cut on each training split, stored with the predictions).
    * every method (``pathfuse.fusion.run``/``inputs``): ``has_classes`` and ``time_to_event``
      for the metadata; time-to-event kinds need the experts' per-fold ``bin_edges`` (the
      blocks get each sample's bin).
    * ``best_val_expert`` / ``oracle_expert``: ``metrics`` and ``row_scores`` /
      ``unit_scores`` (experts are ranked with the evaluation's metrics).
    * ``mean_logits``: nothing more; ``mean_probs``: ``training()``'s ``log_distribution``
      and ``output_logits``.
    * ``shazam`` and ``concat``: ``training()``'s ``block_targets`` and ``loss``;
      ``early_stopping_score`` (Shazam without one stops on 0.8·balanced accuracy +
      0.2·weighted F1, i.e. needs the classification metrics; concat stops on the loss).
      Concat picks the survival ABMIL and epoch budget when ``time_to_event``.
    * ``logitprod``, ``logitprod_converged`` and ``stacking`` do kind-specific maths: with
      ``time_to_event`` they fuse event distributions over T+1 outcomes (one gate per
      outcome) and fit the discrete-time survival likelihood on bins and events; otherwise
      they fuse softmax distributions over classes and fit the cross-entropy on
      ``label``. A kind that is neither (e.g. regression) needs its own branch there.
      LogitProd also stops on ``early_stopping_score`` (else the fused validation NLL).
    """

    slide: ClassVar[bool] = True
    time_to_event: ClassVar[bool] = False
    has_classes: ClassVar[bool] = True
    metrics: ClassVar[tuple[str, ...]] = ()
    target_columns: ClassVar[tuple[str, ...]] = ("label",)
    stratify_by: ClassVar[str] = "label"
    undefined_reason: ClassVar[str] = "too few distinct targets"
    default_monitor: ClassVar[str] = "loss"
    early_stopping_score: ClassVar[tuple[str, Mapping[str, float]] | None] = None
    training_rules: ClassVar[str | type] = ""
    label: ClassVar[str] = ""

    def n_outputs(self, task: TaskFacts) -> int:
        """Logits per sample for ``task``."""
        raise NotImplementedError

    def label_columns(self, task: TaskFacts) -> list[str]:
        """Columns a task's label table must have besides ``slide_id``."""
        raise NotImplementedError

    def row_scores(self, logits: np.ndarray) -> np.ndarray:
        """Per-row scores [N, K] from logits [N, K] that metrics average per patient."""
        raise NotImplementedError

    def unit_scores(self, mean_row_scores: np.ndarray) -> np.ndarray:
        """A patient's averaged row scores → what its metrics read (identity unless overridden)."""
        return mean_row_scores

    def scored_metrics(self, task: TaskFacts) -> list[str]:
        """The metrics the evaluation stage reports for ``task`` (its registry's, unless a kind adds some)."""
        return list(task.metrics)

    def mean_nll(self, logits: np.ndarray, rows: pd.DataFrame, bin_edges: Sequence[float] | None,
                 alpha: float) -> float:
        """Mean per-row validation NLL of ``logits`` [N, K] against the targets of ``rows``.

        It breaks ties when :mod:`pathfuse.selection` ranks experts; NaN (the default, for a
        kind that defines none) ranks last, so ties then fall to the experts' config order.
        ``bin_edges``: the fold's bins, for kinds that bin times; ``alpha``: the survival NLL's α.
        """
        return math.nan

    def training(self) -> KindTraining:
        """The kind's torch side (imported now: only training code asks for it)."""
        rules = self.training_rules
        if isinstance(rules, str):
            module, name = rules.split(":")
            rules = getattr(importlib.import_module(module), name)
        return rules()


#: Kind name → its class; the built-in kinds register on import of :mod:`pathfuse.kinds`.
KINDS: Registry[type[TaskKind]] = Registry("task kind")


def get_kind(name: str) -> TaskKind:
    """The strategy of kind ``name``; an unknown name lists the registered ones."""
    return KINDS.get(name)()

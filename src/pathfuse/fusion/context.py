"""What every fusion method reads for one task: the config, the aligned expert blocks, the teachers."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from pathfuse.config import Config, TaskSpec
from pathfuse.fusion import BlockKey
from pathfuse.fusion.blocks import SPLITS, Block
from pathfuse.fusion.features import TeacherFeatures, load_teacher_features
from pathfuse.reproducibility import derive_seed
from pathfuse.seeds import replicate_parts
from pathfuse.settings import FusionSettings

log = logging.getLogger(__name__)

#: The expert blocks a logit-level learner reads to fit itself and choose its settings, by ``train_on``.
READS = {"oof": ["train_oof", "val"], "val": ["val"], "in_sample": ["train", "val"]}


def read_record(trained_on: str) -> dict[str, Any]:
    """What a logit-level learner records of the rows it learned from; the cost table charges by it.

    ``uses_inner_experts`` is true only when it read out-of-fold rows, whatever other methods of
    the run asked for: only then is it charged a share of the inner-fold experts.
    """
    return {"trained_on": trained_on, "logits_read": READS[trained_on],
            "uses_inner_experts": "train_oof" in READS[trained_on]}

class FusionInputError(ValueError):
    """The experts' predictions cannot be fused; the message names the file and the fix."""


@dataclass
class FusionContext:
    """Everything a method needs for one task: config, aligned expert rows, teacher features.

    Attributes:
        blocks: fold → {(split, oof): Block}.
        expert_meta: the first expert file's metadata (fold facts such as carve_val).
        dropped: samples left out of every method, with the reason.
    """

    cfg: Config
    task: TaskSpec
    encoders: list[str]
    blocks: dict[int, dict[BlockKey, Block]]
    bin_edges: dict[int, list[float]] | None
    classes: list[Any] | None
    expert_meta: dict[str, Any]
    dropped: list[dict[str, Any]] = field(default_factory=list)
    replicate: int = 0  # the training seed's index (experts.n_seeds; 0: the default run)

    @property
    def kind(self) -> str:
        """The task's kind name (what the fusers branch on through the kind registry)."""
        return self.task.kind

    @property
    def folds(self) -> list[int]:
        """The outer folds that have expert rows, in order (a fuser runs once per fold)."""
        return sorted(self.blocks)

    @property
    def settings(self) -> FusionSettings:
        """The run config's typed ``fusion`` settings."""
        return self.cfg.settings.fusion

    def block(self, fold: int, split: str, oof: bool = False) -> Block:
        """Rows of one block; a missing train/val/test block is an error naming the task."""
        try:
            return self.blocks[fold][(split, oof)]
        except KeyError:
            raise FusionInputError(
                f"task {self.task.id} fold {fold}: the experts have no {split!r} rows"
                f"{' (out-of-fold)' if oof else ''}; re-run the experts stage"
            ) from None

    def has_block(self, fold: int, split: str, oof: bool = False) -> bool:
        """Whether the block exists and has rows (optional blocks, e.g. out-of-fold, may lack them)."""
        return (split, oof) in self.blocks.get(fold, {}) and len(self.blocks[fold][(split, oof)]) > 0

    def training_block(self, fold: int, train_on: str, method: str) -> tuple[Block, str]:
        """The rows a logit-level learner (``train_on``: oof | val | in_sample) learns from, and the mode used.

        ``oof`` falls back to the in-sample training logits, with a warning, when the experts
        wrote no out-of-fold rows; the returned mode (what the method records as ``trained_on``,
        and what decides whether it is charged for inner-fold experts) says which it got.
        """
        if train_on == "oof" and not self.has_block(fold, "train", True):
            log.warning("task %s fold %d: the experts wrote no out-of-fold logits; %s trains on their "
                        "in-sample training logits instead", self.task.id, fold, method)
            train_on = "in_sample"
        if train_on == "val":
            return self.block(fold, "val"), train_on
        return self.block(fold, "train", train_on == "oof"), train_on

    def fold_bin_edges(self, fold: int) -> list[float] | None:
        """Survival: the fold's time-bin edges (what ``metrics.score`` needs for the IBS)."""
        return self.bin_edges[fold] if self.bin_edges is not None else None

    def seed(self, method: str, fold: int) -> int:
        """Seed of one (task, method, fold): independent of job order; a replicate adds its index."""
        return derive_seed(self.cfg.seed, self.task.id, method, fold, *replicate_parts(self.replicate))

    def fold_facts(self, fold: int) -> dict[str, Any]:
        """The experts' per-fold facts to copy into the fusers' metadata (carve_val, sizes)."""
        facts = dict(self.expert_meta.get("folds", {}).get(str(fold), {}))
        out: dict[str, Any] = {"carve_val": bool(facts.get("carve_val", False))}
        for split in SPLITS:
            out[f"n_{split}"] = len(self.blocks[fold].get((split, False), ())) if fold in self.blocks else 0
        return out

    @cached_property
    def features(self) -> TeacherFeatures:
        """The teachers' input features (tile embeddings or slide bags), loaded once per task."""
        return load_teacher_features(self.cfg, self.task, self.encoders)

"""What every fusion method reads for one task: the config, the aligned expert blocks, the teachers."""

from __future__ import annotations

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

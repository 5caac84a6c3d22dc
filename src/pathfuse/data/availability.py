"""Which samples of a task have usable features from **every** encoder of the task.

Methods are only comparable on the same samples: if one FM's bag of a slide is empty, or one FM
was never run on it, the slide must leave every expert, every fuser and the evaluation alike —
not only that FM's expert, which would make the fuse job fail after all experts finished. So
each expert job decides its samples from the features of all the task's encoders (the job plan
makes every encoder's feature manifests its inputs), and every job of a task reaches the same
answer from the same files. Each slide or tile left out keeps its reasons, one per encoder that
lacks it, for the predictions' metadata and the report's left-out table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pathfuse.config import Config, TaskSpec
from pathfuse.data.bags import cohort_feature_paths, tiling_skipped
from pathfuse.data.tiles import load_tile_index
from pathfuse.encoders.sources import coverage, is_features_only


@dataclass(frozen=True)
class Availability:
    """Slide (or tile) ids usable by every encoder, and the known ids left out with their reasons."""

    usable: frozenset[str]
    left_out: dict[str, str] = field(default_factory=dict)  # id → "reason; reason" (one per encoder lacking it)

    @property
    def known(self) -> frozenset[str]:
        """Every id some encoder has features of, or that a stage recorded as skipped."""
        return self.usable | frozenset(self.left_out)


def slide_availability(cfg: Config, task: TaskSpec) -> Availability:
    """The slides of ``task``'s cohort with features of every encoder (the embedding stage's manifests).

    Reasons come from where the slide was lost: skipped at tiling, skipped by one encoder's
    embedding or import (e.g. an empty bag), or absent from one encoder's imported folder.
    """
    cohort = task.cohort or ""
    found = {e: cohort_feature_paths(cfg, e, cohort) for e in task.encoders}
    skipped = tiling_skipped(cfg, cohort)
    folders = coverage(cfg, cohort, list(task.encoders)).dropped if is_features_only(cfg, cohort) else {}
    known = set(skipped) | set(folders)
    for paths, unavailable in found.values():
        known |= set(paths) | set(unavailable)
    usable, left_out = set(), {}
    for slide in sorted(known):
        reasons: list[str] = []
        for encoder, (paths, unavailable) in found.items():
            if slide in paths:
                continue
            if slide in unavailable:
                reasons.append(f"{unavailable[slide]} ({encoder})")
            else:
                reasons.append(skipped.get(slide) or folders.get(slide) or f"no features for {encoder}")
        if reasons:
            left_out[slide] = "; ".join(dict.fromkeys(reasons))
        else:
            usable.add(slide)
    return Availability(frozenset(usable), left_out)


def tile_availability(cfg: Config, task: TaskSpec) -> Availability:
    """The tiles of ``task``'s dataset in every encoder's feature index (an import may drop rows)."""
    ids = {e: set(load_tile_index(cfg, task, e)["sample_id"].astype(str)) for e in task.encoders}
    every = set().union(*ids.values())
    usable = set.intersection(*ids.values()) if ids else set()
    left_out = {t: "; ".join(f"no features for {e}" for e in task.encoders if t not in ids[e])
                for t in sorted(every - usable)}
    return Availability(frozenset(usable), left_out)

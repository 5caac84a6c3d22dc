"""What one expert job (task, encoder) loads once: samples, folds, datasets, device, paths."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from pathfuse.config import Config, TaskSpec
from pathfuse.data.bags import BagDataset, BagStore, HeldBags, bags_nbytes, cohort_feature_paths, collate_bags
from pathfuse.data.labels import load_samples
from pathfuse.data.splits import Fold, make_folds, record_unsplit
from pathfuse.data.tiles import TileDataset, collate_tiles, load_tile_features
from pathfuse.heads.registry import HeadRecipe
from pathfuse.plan import Planner
from pathfuse.reproducibility import choose_device
from pathfuse.settings import ExpertsSettings
from pathfuse.settings.base import per_kind

log = logging.getLogger(__name__)


@dataclass
class FoldResult:
    """One finished outer fold: its prediction rows, facts, training curve and test attention."""

    fold: int
    rows: pd.DataFrame
    info: dict[str, Any]
    curve: pd.DataFrame
    bin_edges: list[float] | None
    attention: pd.DataFrame


@dataclass
class Job:
    """Everything one (task, encoder) job needs, loaded once."""

    cfg: Config
    spec: TaskSpec
    encoder: str
    settings: ExpertsSettings
    recipe: HeadRecipe  # experts.heads.<the task's kind>
    samples: pd.DataFrame
    folds: list[Fold]
    dataset: Callable[[pd.DataFrame, dict[str, np.ndarray], bool, int], Dataset]
    collate: Callable[[list[Any]], dict[str, Any]]
    in_dim: int
    bag_tiles: Callable[[pd.DataFrame], float]
    device: str
    inputs: list[Path]
    store: BagStore | None = None
    replicate: int = 0  # the training seed's index (0: the default run's seeds and paths)
    held_bytes: int | None = None  # bags held in memory (experts.features_in_memory_gib), None: read per batch

    @classmethod
    def create(cls, cfg: Config, task: str, encoder: str, replicate: int = 0) -> Job:
        """Load everything a job needs once, so that every fold of it reads the same inputs.

        Args:
            cfg: The run's configuration.
            task: The task's id.
            encoder: The encoder whose features the expert reads.
            replicate: The training seed's index (0: the default run's seeds and paths).

        Returns:
            The job, with its samples, folds, feature access and device chosen.
        """
        spec = cfg.task(task)
        settings = cfg.settings.experts
        samples = load_samples(cfg, spec, encoder)
        folds = make_folds(cfg, spec, samples)
        record_unsplit(samples, folds)
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        device = choose_device(settings.device, "experts.device", torch.cuda.is_available)
        recipe = recipe_of(settings, spec.kind)
        inputs = _input_files(cfg, spec, encoder)
        if spec.is_slide_task:
            features = _bag_features(cfg, spec, encoder, samples, settings, device)
        else:
            features = _tile_features(cfg, spec, encoder)
        return cls(
            cfg=cfg,
            spec=spec,
            encoder=encoder,
            settings=settings,
            recipe=recipe,
            samples=samples,
            folds=folds,
            dataset=features.dataset,
            collate=features.collate,
            in_dim=features.in_dim,
            bag_tiles=features.bag_tiles,
            device=device,
            inputs=inputs,
            store=features.store,
            replicate=replicate,
            held_bytes=features.store.nbytes if isinstance(features.store, HeldBags) else None,
        )

    # -- paths
    @property
    def out_dir(self) -> Path:
        """The job's output folder in the run's layout (one per task, encoder and replicate)."""
        return self.cfg.layout.expert_dir(self.spec.id, self.encoder, self.replicate)

    def partial_path(self, k: int) -> Path:
        """Fold ``k``'s prediction rows, kept until the job ends so that a rerun can resume."""
        return self.out_dir / f".fold{k}.partial.parquet"

    def partial_attention_path(self, k: int) -> Path:
        """Fold ``k``'s test attention, kept next to its prediction rows for a resume."""
        return self.out_dir / f".fold{k}.attention.partial.parquet"

    def weights_path(self, k: int) -> Path:
        """Fold ``k``'s outer model weights (a finished fold has them; a resume checks them)."""
        return self.out_dir / f"fold{k}.safetensors"


class _Features(NamedTuple):
    """How a job reads its samples' features: slide bags (a cohort's store) or tile rows."""

    dataset: Callable[[pd.DataFrame, dict[str, np.ndarray], bool, int], Dataset]
    collate: Callable[[list[Any]], dict[str, Any]]
    in_dim: int
    bag_tiles: Callable[[pd.DataFrame], float]
    store: BagStore | None


def _bag_features(
    cfg: Config, spec: TaskSpec, encoder: str, samples: pd.DataFrame, settings: ExpertsSettings, device: str
) -> _Features:
    """Slide tasks: each sample's bag of tile features, held in memory when it fits the budget.

    Training bags are subsampled to ``experts.max_tiles_per_bag`` (memory and time per step);
    evaluation bags are whole.
    """
    max_tiles = settings.max_tiles_per_bag
    store = BagStore(cohort_feature_paths(cfg, encoder, spec.cohort or "")[0])
    bags = samples["slide_ids"].tolist()
    if 0 < (size := bags_nbytes(store, bags)) <= settings.features_in_memory_gib * 2**30:
        store = HeldBags(store, bags, device)
        log.info("holding the %d bags in memory (%.2f GiB float16, %s)", len(bags), size / 2**30, device)
    else:
        log.info("reading the %d bags from disk per batch (%.2f GiB > experts.features_in_memory_gib %s)",
                 len(bags), size / 2**30, settings.features_in_memory_gib)

    def bag_dataset(df: pd.DataFrame, targets: dict[str, np.ndarray], train: bool, seed: int) -> Dataset:
        return BagDataset(store, df["slide_ids"].tolist(), targets, max_tiles if train else None, seed)

    def bag_tiles(df: pd.DataFrame) -> float:
        return float(np.mean([sum(store.shape(s)[0] for s in ids) for ids in df["slide_ids"]]))

    in_dim = store.shape(samples["slide_ids"].iloc[0][0])[1]
    return _Features(bag_dataset, collate_bags, in_dim, bag_tiles, store)


def _tile_features(cfg: Config, spec: TaskSpec, encoder: str) -> _Features:
    """Tile tasks: rows of the dataset's tile-feature matrix."""
    tiles = load_tile_features(cfg, spec, encoder)

    def tile_dataset(df: pd.DataFrame, targets: dict[str, np.ndarray], train: bool, seed: int) -> Dataset:
        return TileDataset(tiles.features, df["row"].to_numpy(), targets)

    return _Features(tile_dataset, collate_tiles, int(tiles.features.shape[1]), lambda df: 1.0, None)


def recipe_of(settings: ExpertsSettings, kind: str) -> HeadRecipe:
    """The expert recipe of task kind ``kind`` (``experts.heads.<kind>``)."""
    recipe: HeadRecipe = per_kind(settings.heads, kind, "experts.heads")
    return recipe


def _input_files(cfg: Config, spec: TaskSpec, encoder: str) -> list[Path]:
    """Files whose change invalidates a finished fold: the job plan's inputs (labels, splits, features)."""
    inputs = Planner(cfg).expert(spec.id, encoder).inputs
    if not spec.is_slide_task:  # the per-dataset files behind the tile-feature manifest
        inputs["features"] = [str(cfg.layout.tile_features(encoder, spec.dataset or "")),
                              str(cfg.layout.tile_feature_index(encoder, spec.dataset or ""))]
    return [Path(p) for name in sorted(inputs) for p in inputs[name]]

"""What one expert job (task, encoder) loads once: samples, folds, datasets, device, paths."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from pathfuse.config import Config, TaskSpec
from pathfuse.data.bags import BagDataset, BagStore, cohort_feature_paths, collate_bags
from pathfuse.data.labels import load_samples
from pathfuse.data.splits import Fold, make_folds
from pathfuse.data.tiles import TileDataset, collate_tiles, load_tile_features
from pathfuse.plan import Planner
from pathfuse.reproducibility import choose_device


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
    settings: dict[str, Any]
    recipe: dict[str, Any]
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

    @classmethod
    def create(cls, cfg: Config, task: str, encoder: str, replicate: int = 0) -> Job:
        spec = cfg.task(task)
        settings = cfg.section("experts")
        samples = load_samples(cfg, spec, encoder)
        folds = make_folds(cfg, spec, samples)
        if settings["torch_threads"]:
            torch.set_num_threads(int(settings["torch_threads"]))
        device = choose_device(settings["device"], "experts.device", torch.cuda.is_available)
        common = {
            "cfg": cfg,
            "spec": spec,
            "encoder": encoder,
            "settings": settings,
            "recipe": dict(settings["heads"][spec.kind]),
            "samples": samples,
            "folds": folds,
            "device": device,
            "inputs": _input_files(cfg, spec, encoder),
            "replicate": replicate,
        }
        if spec.is_slide_task:
            store = BagStore(cohort_feature_paths(cfg, encoder, spec.cohort or "")[0])
            max_tiles = settings["max_tiles_per_bag"]

            def bag_dataset(
                df: pd.DataFrame, targets: dict[str, np.ndarray], train: bool, seed: int
            ) -> Dataset:
                return BagDataset(
                    store, df["slide_ids"].tolist(), targets, max_tiles if train else None, seed
                )

            def bag_tiles(df: pd.DataFrame) -> float:
                return float(np.mean([sum(store.shape(s)[0] for s in ids) for ids in df["slide_ids"]]))

            return cls(
                **common,
                dataset=bag_dataset,
                collate=collate_bags,
                in_dim=store.shape(samples["slide_ids"].iloc[0][0])[1],
                bag_tiles=bag_tiles,
                store=store,
            )
        tiles = load_tile_features(cfg, spec, encoder)

        def tile_dataset(df: pd.DataFrame, targets: dict[str, np.ndarray], train: bool, seed: int) -> Dataset:
            return TileDataset(tiles.features, df["row"].to_numpy(), targets)

        return cls(
            **common,
            dataset=tile_dataset,
            collate=collate_tiles,
            in_dim=int(tiles.features.shape[1]),
            bag_tiles=lambda df: 1.0,
        )

    # -- paths
    @property
    def out_dir(self) -> Path:
        return self.cfg.layout.expert_dir(self.spec.id, self.encoder, self.replicate)

    def partial_path(self, k: int) -> Path:
        return self.out_dir / f".fold{k}.partial.parquet"

    def partial_attention_path(self, k: int) -> Path:
        return self.out_dir / f".fold{k}.attention.partial.parquet"

    def weights_path(self, k: int) -> Path:
        return self.out_dir / f"fold{k}.safetensors"


def _input_files(cfg: Config, spec: TaskSpec, encoder: str) -> list[Path]:
    """Files whose change invalidates a finished fold: the job plan's inputs (labels, splits, features)."""
    inputs = Planner(cfg).expert(spec.id, encoder).inputs
    if not spec.is_slide_task:  # the per-dataset files behind the tile-feature manifest
        inputs["features"] = [str(cfg.layout.tile_features(encoder, spec.dataset or "")),
                              str(cfg.layout.tile_feature_index(encoder, spec.dataset or ""))]
    return [Path(p) for name in sorted(inputs) for p in inputs[name]]

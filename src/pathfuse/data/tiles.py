"""Tile-dataset features (one embedding per tile image) and their index, for tile tasks.

A tile dataset's features are one [n_images, dim] float16 tensor (1e5 × 1536 × 2 B ≈ 300 MB),
small enough to hold once; batches are converted to float32 on the fly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors import safe_open
from torch.utils.data import Dataset

from pathfuse.config import Config, TaskSpec
from pathfuse.data.bags import FEATURES_KEY
from pathfuse.encoders.tile_groups import GROUP_SOURCE_KEY, NO_GROUP
from pathfuse.io import read_parquet

SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test", "": ""}


@dataclass(frozen=True)
class TileFeatures:
    """All features of a tile dataset for one encoder, and its index (schema tile_feature_index)."""

    features: torch.Tensor  # float16 [n_images, dim]
    index: pd.DataFrame  # row, sample_id, label, split, group


def load_tile_index(cfg: Config, task: TaskSpec, encoder: str) -> pd.DataFrame:
    """Read and check a tile dataset's feature index (rows inside the tensor, known splits).

    ``attrs["group_source"]`` says where the tiles' patient/slide groups came from
    (:mod:`pathfuse.encoders.tile_groups`; ``"none"``: every tile is its own unit).
    """
    tensor_path = cfg.layout.tile_features(encoder, task.dataset or "")
    index_path = cfg.layout.tile_feature_index(encoder, task.dataset or "")
    for path in (tensor_path, index_path):
        if not path.exists():
            raise FileNotFoundError(
                f"{path}: tile features of dataset {task.dataset!r} for encoder {encoder!r} are "
                f"missing; run `pathfuse embed-tiles --encoder {encoder}` (or delete "
                f"{cfg.layout.tile_features_manifest(encoder)} so that Snakemake re-runs embed_tiles; "
                "finished datasets are kept)"
            )
    with safe_open(tensor_path, framework="pt") as fh:
        n_rows = fh.get_slice(FEATURES_KEY).get_shape()[0]
    index, meta = read_parquet(index_path, schema="tile_feature_index")
    rows = index["row"].to_numpy(dtype=np.int64)
    if len(rows) and (rows.min() < 0 or rows.max() >= n_rows):
        raise ValueError(f"{index_path}: rows outside the {n_rows} feature rows of {tensor_path}")
    unknown = sorted(set(index["split"].astype(str)) - set(SPLIT_ALIASES))
    if unknown:
        raise ValueError(f"{index_path}: unknown split value(s) {unknown}; expected train, val, test or ''")
    out = index.assign(split=index["split"].astype(str).map(SPLIT_ALIASES)).reset_index(drop=True)
    # Indexes written before groups were recorded: every tile its own group means no groups.
    out.attrs[GROUP_SOURCE_KEY] = meta.get(GROUP_SOURCE_KEY) or (
        NO_GROUP if (index["group"].astype(str) == index["sample_id"].astype(str)).all() else "dataset")
    return out


def load_tile_features(cfg: Config, task: TaskSpec, encoder: str) -> TileFeatures:
    """Read ``results/features/{encoder}/{dataset}.safetensors`` and its checked index."""
    index = load_tile_index(cfg, task, encoder)
    with safe_open(cfg.layout.tile_features(encoder, task.dataset or ""), framework="pt") as fh:
        features = fh.get_tensor(FEATURES_KEY)
    return TileFeatures(features=features, index=index)


class TileDataset(Dataset):
    """Items of selected feature rows with their targets (``index`` = position in ``rows``)."""

    def __init__(self, features: torch.Tensor, rows: np.ndarray, targets: dict[str, np.ndarray]) -> None:
        self.features, self.rows = features, np.asarray(rows, dtype=np.int64)
        self.targets = {k: np.asarray(v) for k, v in targets.items()}

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {"features": self.features[self.rows[i]], "index": i}
        item.update({k: v[i] for k, v in self.targets.items()})
        return item


def collate_tiles(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tile features as float32 [B, dim]; targets as tensors."""
    batch: dict[str, Any] = {"inputs": {"features": torch.stack([it["features"] for it in items]).float()}}
    for key in items[0]:
        if key != "features":
            batch[key] = torch.as_tensor(np.asarray([it[key] for it in items]))
    return batch

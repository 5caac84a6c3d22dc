"""Memory-mapped bags of tile features for slide-level heads.

A cohort of 10,000 slides × 2,000 tiles × 1,536 dims is ~60 GB in float16, so bags are not
loaded together by default: :class:`BagStore` opens a slide's safetensors file (memory-mapped by
``safe_open``) only while one bag is read, copies that bag out as float32 and closes it again.
Peak memory is then a batch of bags plus the model, whatever the cohort size (measured in
benchmarks/experts.py). A job whose bags fit ``experts.features_in_memory_gib`` holds them
instead (:class:`HeldBags`): read once, not once per training and epoch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from torch.utils.data import Dataset

from pathfuse.config import Config
from pathfuse.io import read_parquet
from pathfuse.paths import shard_name

log = logging.getLogger(__name__)

FEATURES_KEY = "features"
#: Feature-file metadata value ``coords`` of bags imported without tile coordinates.
COORDS_ABSENT = "absent"


class FeatureFileError(OSError):
    """A features file listed as finished cannot be read; the message names the file and the fix."""


class BagStore:
    """Slide id → features file; reads one bag at a time from memory-mapped safetensors.

    Args:
        paths: slide id → path of its ``features`` safetensors file ([n_tiles, dim]).
    """

    def __init__(self, paths: Mapping[str, str | Path]) -> None:
        self.paths = {str(k): Path(v) for k, v in paths.items()}

    def _path(self, slide_id: str) -> Path:
        try:
            path = self.paths[slide_id]
        except KeyError:
            raise KeyError(f"slide {slide_id!r} has no features file in this bag store") from None
        if not path.exists():
            raise FileNotFoundError(
                f"features of slide {slide_id!r} not found at {path}; re-run the embedding stage"
            )
        return path

    def _open(self, slide_id: str, framework: str) -> Any:
        """The slide's features file, opened; an unreadable file is named with its fix, not safetensors' error."""
        path = self._path(slide_id)
        try:
            return safe_open(path, framework=framework)
        except Exception as err:  # safetensors raises its own error types for a damaged file
            raise FeatureFileError(
                f"features of slide {slide_id!r} cannot be read from {path} ({type(err).__name__}: {err}); delete "
                "the file and rerun its embedding job (snakemake --forcerun embed_slides, or delete its shard "
                "manifest under _shards/)"
            ) from None

    def shape(self, slide_id: str) -> tuple[int, int]:
        """(n_tiles, dim) of a slide, read from the file header only."""
        with self._open(slide_id, "pt") as fh:
            n, dim = fh.get_slice(FEATURES_KEY).get_shape()
        return int(n), int(dim)

    def coords(self, slide_id: str) -> np.ndarray | None:
        """int64 [n_tiles, 2] level-0 tile coordinates, or None for bags imported without them."""
        with self._open(slide_id, "np") as fh:
            if (fh.metadata() or {}).get("coords") == COORDS_ABSENT:
                return None
            return fh.get_tensor("coords")

    def get(
        self,
        slide_ids: Sequence[str],
        max_tiles: int | None = None,
        rng: np.random.Generator | None = None,
    ) -> torch.Tensor:
        """float32 [n_tiles, dim]: the tiles of one or more slides (one patient) concatenated.

        With ``max_tiles`` and ``rng``, a random subset of at most ``max_tiles`` tiles (kept in
        their original order) bounds the cost of very large bags during training.
        """
        return _subsample(self.read(slide_ids), max_tiles, rng).float()

    def read(self, slide_ids: Sequence[str]) -> torch.Tensor:
        """float16 [n_tiles, dim]: the stored tiles of one or more slides concatenated."""
        parts = []
        for slide_id in slide_ids:
            with self._open(slide_id, "pt") as fh:
                parts.append(fh.get_tensor(FEATURES_KEY))
        return parts[0] if len(parts) == 1 else torch.cat(parts)


class HeldBags(BagStore):
    """A job's bags read once and held (float16, in RAM or on the GPU), read like a :class:`BagStore`.

    Training many heads reads every bag in every epoch; holding the cohort's bags (when they
    fit ``experts.features_in_memory_gib``) replaces those disk reads by a memory copy. Values
    are exactly the store's: the same float16 tiles, subsampled the same way, converted to float32.
    """

    def __init__(self, store: BagStore, bags: Sequence[Sequence[str]], device: str | torch.device = "cpu") -> None:
        super().__init__(store.paths)
        self._held = {tuple(ids): store.read(ids).to(device) for ids in bags}
        self.nbytes = sum(b.numel() * b.element_size() for b in self._held.values())

    def read(self, slide_ids: Sequence[str]) -> torch.Tensor:
        """The held bag (a bag not held is read from its files)."""
        held = self._held.get(tuple(slide_ids))
        return super().read(slide_ids) if held is None else held


def bags_nbytes(store: BagStore, bags: Sequence[Sequence[str]]) -> int:
    """float16 bytes of ``bags`` (from the files' headers; nothing is read)."""
    return sum(2 * n * dim for ids in bags for n, dim in (store.shape(s) for s in ids))


def _subsample(bag: torch.Tensor, max_tiles: int | None, rng: np.random.Generator | None) -> torch.Tensor:
    if max_tiles is not None and rng is not None and len(bag) > max_tiles:
        keep = np.sort(rng.choice(len(bag), size=max_tiles, replace=False))
        bag = bag[torch.from_numpy(keep).to(bag.device)]
    return bag


class BagDataset(Dataset):
    """One item per sample: its bag and its targets.

    Args:
        store: where the bags are.
        slide_ids: per sample, the slides that form its bag (one, or all of a patient's).
        targets: name → array aligned with ``slide_ids`` (e.g. ``label``, ``bin``, ``event``);
            the sample's position is added as ``index``.
        max_tiles: subsample bags larger than this (training only; None = all tiles).
        seed: seeds the subsampling; the draw sequence follows the (seeded) loader order.
    """

    def __init__(
        self,
        store: BagStore,
        slide_ids: Sequence[Sequence[str]],
        targets: Mapping[str, np.ndarray],
        max_tiles: int | None = None,
        seed: int = 0,
    ) -> None:
        self.store, self.slide_ids = store, [list(s) for s in slide_ids]
        self.targets = {k: np.asarray(v) for k, v in targets.items()}
        for name, values in self.targets.items():
            if len(values) != len(self.slide_ids):
                raise ValueError(f"target {name!r} has {len(values)} values for {len(self.slide_ids)} bags")
        self.max_tiles = max_tiles
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.slide_ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        # Values differ by key (a tensor, the index, numpy targets), as in torch's own collate.
        item: dict[str, Any] = {
            "features": self.store.get(self.slide_ids[i], self.max_tiles, self._rng),
            "index": i,
        }
        item.update({k: v[i] for k, v in self.targets.items()})
        return item


def collate_bags(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Pad bags to the longest one in the batch and mark real tiles in ``mask``."""
    bags = [it["features"] for it in items]
    lengths = torch.tensor([len(b) for b in bags])
    device = bags[0].device  # held on the GPU: the batch is built there
    features = torch.zeros(len(bags), int(lengths.max()), bags[0].shape[1], dtype=bags[0].dtype, device=device)
    for row, bag in enumerate(bags):
        features[row, : len(bag)] = bag
    mask = torch.arange(features.shape[1], device=device)[None, :] < lengths.to(device)[:, None]
    batch: dict[str, Any] = {"inputs": {"features": features, "mask": mask}}
    for key in items[0]:
        if key != "features":
            batch[key] = torch.as_tensor(np.asarray([it[key] for it in items]))
    return batch


def cohort_feature_paths(cfg: Config, encoder: str, cohort: str) -> tuple[dict[str, Path], dict[str, str]]:
    """Read a cohort's feature shard manifests: (slide → features path, slide → why unavailable).

    Raises FileNotFoundError naming the first missing manifest (the embedding stage has not
    run for that shard).
    """
    paths: dict[str, Path] = {}
    unavailable: dict[str, str] = {}
    for shard in range(cfg.n_shards(cohort)):
        manifest = cfg.layout.feature_shard(encoder, cohort, shard_name(shard))
        if not manifest.exists():
            raise FileNotFoundError(
                f"{manifest}: feature manifest of encoder {encoder!r}, cohort {cohort!r}, shard "
                f"{shard_name(shard)} is missing; run the embed_slides rule for it first"
            )
        df, _ = read_parquet(manifest, schema="feature_shard")
        for row in df.itertuples(index=False):
            if row.status == "ok":
                paths[str(row.slide_id)] = Path(str(row.features_path))
            else:
                unavailable[str(row.slide_id)] = (
                    f"embedding {row.status}: {getattr(row, 'reason', '')}".strip()
                )
    return paths, unavailable


def tiling_skipped(cfg: Config, cohort: str) -> dict[str, str]:
    """Slides the tiling stage skipped (slide → reason); empty when no skip list exists."""
    path = cfg.layout.tile_skipped(cohort)
    if not path.exists():
        return {}
    df, _ = read_parquet(path, schema="skipped")
    reasons = df["reason"] if "reason" in df else [""] * len(df)
    return {str(s): f"skipped at tiling: {r}" for s, r in zip(df["slide_id"], reasons, strict=True)}

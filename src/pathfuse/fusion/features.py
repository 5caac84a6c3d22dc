"""The teachers' input features for the feature-level methods (Shazam, concat).

Samples are the experts' samples (``sample_id`` of the predictions); this module only finds
their features, through the same sample tables the experts used
(:func:`pathfuse.data.labels.load_samples`):

* tile tasks: one row per tile in each encoder's ``{dataset}.safetensors`` tensor;
* slide tasks: each sample's bag (its slide, or all of a patient's slides) per encoder, read
  from the memory-mapped per-slide feature files by :class:`pathfuse.data.bags.BagStore`.
  Bags of a small cohort are held in memory (float16) once read, so that epochs after the first
  do not re-open files; past :data:`CACHE_LIMIT_BYTES` they are re-read on every use.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pathfuse.config import Config, TaskSpec
from pathfuse.data.bags import BagStore, cohort_feature_paths
from pathfuse.data.labels import load_samples
from pathfuse.data.tiles import load_tile_features
from pathfuse.fusion.blocks import Block

log = logging.getLogger(__name__)

#: Largest cohort (all encoders, float16) whose bags are cached in memory after the first read.
CACHE_LIMIT_BYTES = 2 * 1024**3


class FeatureError(ValueError):
    """A sample's features are missing or inconsistent; the message names it and the fix."""


@dataclass
class TeacherFeatures:
    """Per encoder: where each sample's features are, and the feature width.

    Tile tasks fill ``tiles`` (float16 [n_images, D_m]) and ``rows``; slide tasks fill
    ``stores`` and ``slide_ids``.
    """

    encoders: list[str]
    dims: list[int]
    tiles: list[torch.Tensor] | None = None
    rows: list[dict[str, int]] | None = None
    stores: list[BagStore] | None = None
    slide_ids: list[dict[str, list[str]]] | None = None
    cache: dict[tuple[int, str], torch.Tensor] | None = field(default=None, repr=False)

    @property
    def is_slide(self) -> bool:
        """Whether the features are slide bags (stores) rather than tile rows."""
        return self.stores is not None

    def tile_matrix(self, block: Block) -> list[torch.Tensor]:
        """Tile tasks: the block's features per encoder, float32 [N, D_m]."""
        assert self.tiles is not None and self.rows is not None
        out = []
        for m, (tensor, rows) in enumerate(zip(self.tiles, self.rows, strict=True)):
            missing = [s for s in block.sample_id if s not in rows]
            if missing:
                raise FeatureError(
                    f"encoder {self.encoders[m]}: no tile features for sample(s) {missing[:5]}; the tile "
                    "features changed after the experts ran; re-run the experts stage"
                )
            out.append(tensor[torch.as_tensor([rows[s] for s in block.sample_id])].float())
        return out

    def bag(self, m: int, sample_id: str) -> torch.Tensor:
        """Slide tasks: encoder ``m``'s bag of one sample, float32 [n_tiles, D_m]."""
        assert self.stores is not None and self.slide_ids is not None
        if self.cache is not None and (m, sample_id) in self.cache:
            return self.cache[(m, sample_id)].float()
        try:
            slides = self.slide_ids[m][sample_id]
        except KeyError:
            raise FeatureError(
                f"encoder {self.encoders[m]}: sample {sample_id!r} has no slide features; the features "
                "changed after the experts ran; re-run the experts stage"
            ) from None
        bag = self.stores[m].get(slides)
        if self.cache is not None:
            self.cache[(m, sample_id)] = bag.half()
        return bag


def load_teacher_features(cfg: Config, task: TaskSpec, encoders: list[str]) -> TeacherFeatures:
    """Locate every encoder's features for the task's samples (tile tensors are read now)."""
    dims: list[int] = []
    if not task.is_slide_task:
        tiles, rows = [], []
        for enc in encoders:
            feats = load_tile_features(cfg, task, enc)
            samples = load_samples(cfg, task, enc)
            tiles.append(feats.features)
            rows.append(dict(zip(samples["sample_id"].astype(str), samples["row"].astype(int), strict=True)))
            dims.append(int(feats.features.shape[1]))
        return TeacherFeatures(encoders=encoders, dims=dims, tiles=tiles, rows=rows)
    stores, slide_ids, total_bytes = [], [], 0
    for enc in encoders:
        paths, _ = cohort_feature_paths(cfg, enc, task.cohort or "")
        samples = load_samples(cfg, task, enc)
        store = BagStore(paths)
        mapping = {str(s): list(ids) for s, ids in zip(samples["sample_id"], samples["slide_ids"], strict=True)}
        sizes = [store.shape(slide) for ids in mapping.values() for slide in ids]
        if not sizes:
            raise FeatureError(f"task {task.id}, encoder {enc}: no slide has features")
        dims.append(sizes[0][1])
        total_bytes += sum(n * d * 2 for n, d in sizes)
        stores.append(store)
        slide_ids.append(mapping)
    check_same_tiles(encoders, stores, slide_ids)
    cache: dict[tuple[int, str], torch.Tensor] | None = {} if total_bytes <= CACHE_LIMIT_BYTES else None
    return TeacherFeatures(encoders=encoders, dims=dims, stores=stores, slide_ids=slide_ids, cache=cache)


def check_same_tiles(encoders: Sequence[str], stores: Sequence[BagStore],
                     slide_ids: Sequence[Mapping[str, list[str]]]) -> None:
    """The feature-level methods pair tile i of every encoder: refuse bags that are not the same tiles.

    Features computed by pathfuse share one tile grid per slide. Imported bags must carry
    ``coords`` and list the same tiles in the same order (TRIDENT features of one job directory
    do); otherwise the slides are named with the fix, instead of pairing unrelated tiles.
    """
    slides = sorted({s for ids in slide_ids[0].values() for s in ids})
    absent, differ = [], []
    for slide in slides:
        coords = [store.coords(slide) for store in stores]
        present = [c for c in coords if c is not None]
        if len(present) < len(coords):
            absent.append(f"{slide} ({', '.join(e for e, c in zip(encoders, coords, strict=True) if c is None)})")
        elif any(not np.array_equal(present[0], c) for c in present[1:]):
            differ.append(slide)
    if absent:
        raise FeatureError(f"{len(absent)} slide(s) have bags without tile coordinates, e.g. {absent[:10]}: Shazam "
                           "and concat align tiles across encoders and need them. Fix: re-export the features with "
                           "'coords', or drop shazam/concat from fusion.methods")
    if differ:
        raise FeatureError(f"{len(differ)} slide(s) have different tiles per encoder, e.g. {differ[:10]}: Shazam and "
                           "concat pair tile i of every encoder. Fix: embed every encoder from the same tiling (one "
                           "TRIDENT job directory, or pathfuse's own tiling), or drop shazam/concat")


class MultiBagDataset(Dataset):
    """One item per sample: its bag from every encoder (the same tile subset for all of them).

    Args:
        features: the teachers' features.
        sample_ids: the samples, in block order.
        targets: name → array aligned with ``sample_ids``; ``index`` is added.
        extras: name → float32 [N, ...] per-sample tensors passed to the model as inputs
            (e.g. distillation-target inputs).
        max_tiles: random tiles per bag (training); None = all.
        seed: seeds the tile subsampling.
        concatenate: join the encoders' features per tile into one bag (the concat baseline),
            which needs the same tiles in every encoder's bag.
    """

    def __init__(
        self, features: TeacherFeatures, sample_ids: Iterable[str], targets: Mapping[str, np.ndarray],
        extras: Mapping[str, Sequence[torch.Tensor]] | None = None, max_tiles: int | None = None, seed: int = 0,
        concatenate: bool = False,
    ) -> None:
        self.features, self.sample_ids = features, [str(s) for s in sample_ids]
        self.targets = {k: np.asarray(v) for k, v in targets.items()}
        self.extras = dict(extras or {})
        self.max_tiles, self.concatenate = max_tiles, concatenate
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.sample_ids)

    def __getitem__(self, i: int) -> dict[str, object]:
        sample = self.sample_ids[i]
        bags = [self.features.bag(m, sample) for m in range(len(self.features.encoders))]
        n_tiles = {len(b) for b in bags}
        if self.concatenate and len(n_tiles) > 1:
            raise FeatureError(
                f"sample {sample!r}: the encoders' bags have different tile counts {sorted(n_tiles)}; "
                "feature concatenation needs features of the same tiles (embed with the same tiling)"
            )
        if self.max_tiles is not None and min(n_tiles) > self.max_tiles:
            keep = torch.from_numpy(np.sort(self._rng.choice(min(n_tiles), size=self.max_tiles, replace=False)))
            bags = [b[keep] for b in bags]
        item: dict[str, object] = {"index": i, **{k: v[i] for k, v in self.targets.items()}}
        item["bags"] = [torch.cat(bags, dim=1)] if self.concatenate else bags
        item["extras"] = {k: [t[i] for t in v] for k, v in self.extras.items()}
        return item


def collate_multibags(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Pad each encoder's bags to the longest in the batch; ``masks`` mark real tiles."""
    n_enc = len(items[0]["bags"])
    bags, masks = [], []
    for m in range(n_enc):
        parts = [it["bags"][m] for it in items]
        lengths = torch.tensor([len(p) for p in parts])
        padded = torch.zeros(len(parts), int(lengths.max()), parts[0].shape[1])
        for row, part in enumerate(parts):
            padded[row, : len(part)] = part
        bags.append(padded)
        masks.append(torch.arange(padded.shape[1])[None, :] < lengths[:, None])
    inputs: dict[str, Any] = {"features": bags, "masks": masks}
    for name in items[0]["extras"]:
        inputs[name] = [torch.stack([it["extras"][name][m] for it in items])
                        for m in range(len(items[0]["extras"][name]))]
    batch: dict[str, Any] = {"inputs": inputs}
    for key in items[0]:
        if key not in ("bags", "extras"):
            batch[key] = torch.as_tensor(np.asarray([it[key] for it in items]))
    return batch

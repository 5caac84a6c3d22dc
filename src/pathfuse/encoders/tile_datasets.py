"""Stage entry ``embed_tiles``: embed every image of the run's tile datasets with one encoder.

One job per encoder (:func:`embed_tile_datasets`) builds the model once and embeds each tile
dataset the run's tile tasks need: loading a billion-parameter checkpoint once instead of once
per dataset, and one process start instead of six. Output per (encoder, dataset): a
safetensors file with ``features`` float16 [n, dim] and a Parquet index (schema
``tile_feature_index``: row, sample_id, label, split, group). The index is written last, so its
presence means the pair is done and a re-run skips it; the encoder's manifest (schema
``tile_features_manifest``), written after all datasets, is what Snakemake tracks. Datasets in
``features`` format, or encoders with bring-your-own features for the dataset, are imported
(:func:`pathfuse.encoders.byo.import_tile_features`) instead of embedded.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

import pathfuse
from pathfuse.config import Config
from pathfuse.encoders import sources
from pathfuse.encoders.extract import FEATURES_SCHEMA_VERSION, check_finite
from pathfuse.encoders.levels import LEVELS_KEY, has_levels, split_levels, writes_levels
from pathfuse.encoders.registry import encoder_spec
from pathfuse.encoders.tile_groups import GROUP_SOURCE_KEY
from pathfuse.encoders.tile_sources import INDEX_COLUMNS, list_samples, read_image
from pathfuse.encoders.transforms import ResizeCrop
from pathfuse.io import read_parquet, write_parquet, write_safetensors

if TYPE_CHECKING:
    from pathfuse.encoders.inference import Embedder, Runtime
    from pathfuse.encoders.weights import LoadedEncoder

log = logging.getLogger(__name__)


class TileImages(Dataset):
    """Items ``(uint8 image [3, S, S], sample index, read ok)`` of a listed tile dataset."""

    def __init__(self, samples: pd.DataFrame, geometry: ResizeCrop, on_error: str, dataset: str) -> None:
        self.files = samples["file"].tolist()
        self.rows = samples["row"].to_numpy(np.int64)
        self.ids = samples["sample_id"].tolist()
        self.geometry = geometry
        self.on_error = on_error
        self.dataset = dataset
        self._h5: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, bool]:
        try:
            return self.geometry(read_image(self.files[index], int(self.rows[index]), self._h5)), index, True
        except Exception as err:  # unreadable or corrupt image: policy decides
            where = f"tile dataset {self.dataset}: sample {self.ids[index]} ({self.files[index]}) unreadable: {err}"
            if self.on_error == "fail":
                raise RuntimeError(f"{where}; set embedding.on_tile_error to drop or zero to go on") from err
            log.warning("%s; %s", where, "dropped" if self.on_error == "drop" else "zero-filled")
            size = self.geometry.crop_px
            return torch.zeros(3, size, size, dtype=torch.uint8), index, False

    def close(self) -> None:
        """Close the HDF5 files this process opened (h5py handles must not outlive the job)."""
        for handle in self._h5.values():
            handle.close()
        self._h5.clear()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_h5"] = {}
        return state


class SharedEncoder:
    """The encoder of a job, built on first use and then reused for every dataset.

    A job whose datasets are all done or imported (bring-your-own features) never loads weights.
    """

    def __init__(self, cfg: Config, encoder: str) -> None:
        self.cfg, self.encoder = cfg, encoder
        self._built: tuple[LoadedEncoder, Runtime, Embedder] | None = None

    def get(self) -> tuple[LoadedEncoder, Runtime, Embedder]:
        """``(loaded encoder, runtime, embedder)``."""
        if self._built is None:
            from pathfuse.encoders.inference import Embedder, select_runtime
            from pathfuse.encoders.weights import load_encoder

            loaded = load_encoder(self.cfg, self.encoder)
            if writes_levels(self.cfg.settings.embedding.levels, "tiles"):
                loaded.model.with_levels(loaded.spec.levels)
            runtime = select_runtime(self.cfg.settings.embedding, loaded.spec.precision)
            self._built = (loaded, runtime, Embedder(loaded, runtime))
        return self._built


def embed_tile_datasets(cfg: Config, encoder: str) -> Path:
    """Embed (or import) every tile dataset the run needs from ``encoder``; return the manifest path."""
    shared = SharedEncoder(cfg, encoder)
    rows, groups = [], {}
    for dataset in cfg.tile_dataset_ids_for(encoder):
        index_path = embed_dataset(cfg, encoder, dataset, shared)
        index, meta = read_parquet(index_path, schema="tile_feature_index", columns=["row", "group"])
        rows.append({"dataset": dataset, "n_samples": len(index),
                     "features_path": str(cfg.layout.tile_features(encoder, dataset)), "index_path": str(index_path)})
        # The manifest is what the experts' DAG reads: a changed grouping must change its content.
        groups[dataset] = {"source": meta.get(GROUP_SOURCE_KEY), "sha256": hashlib.sha256(
            "\n".join(index["group"].astype(str)).encode()).hexdigest()}
    manifest = pd.DataFrame(rows, columns=["dataset", "n_samples", "features_path", "index_path"])
    return write_parquet(manifest, cfg.layout.tile_features_manifest(encoder), schema="tile_features_manifest",
                         meta={"encoder": encoder, "groups": groups})


def embed_dataset(cfg: Config, encoder: str, dataset: str, shared: SharedEncoder | None = None) -> Path:
    """Embed tile dataset ``dataset`` with ``encoder``; return the index Parquet path.

    ``shared`` carries the job's encoder across datasets; without it the encoder is built here.
    """
    from pathfuse.encoders import byo

    spec = encoder_spec(cfg, encoder)
    index_path = cfg.layout.tile_feature_index(encoder, dataset)
    features_path = cfg.layout.tile_features(encoder, dataset)
    if (spec.is_byo or cfg.tile_dataset(dataset).format == "features"
            or sources.tile_source(cfg, encoder, dataset) is not None):
        return byo.import_tile_features(cfg, encoder, dataset)
    levels_wanted = writes_levels(cfg.settings.embedding.levels, "tiles")
    if index_path.exists() and features_path.exists() and (not levels_wanted or has_levels(features_path)):
        log.info("%s/%s: already embedded (%s)", encoder, dataset, index_path)
        return regroup_index(cfg, dataset, index_path)
    samples = list_samples(cfg, dataset)
    feats, ok, metadata = _embed_samples(cfg, shared or SharedEncoder(cfg, spec.name), dataset, samples)
    ids = samples["sample_id"].tolist()
    check_finite(feats, encoder, f"dataset {dataset}", "embedding", lambda i: f"sample {ids[i]}")
    on_tile_error = cfg.settings.embedding.on_tile_error
    keep = ok if on_tile_error == "drop" else np.ones_like(ok)
    dropped = samples.loc[~keep, "sample_id"].tolist()
    if (~ok).any():
        failed = samples.loc[~ok, "sample_id"].tolist()
        log.warning("%s/%s: %d unreadable image(s) %s: %s", encoder, dataset, len(failed),
                    "dropped" if on_tile_error == "drop" else "zero-filled", failed[:20])
    half = feats[keep].astype(np.float16)
    kept = samples.loc[keep, INDEX_COLUMNS].reset_index(drop=True)
    check_finite(half, encoder, f"dataset {dataset}", "float16 embedding (overflow)",
                 lambda i: f"sample {kept['sample_id'].iloc[i]}")
    metadata.update(dataset=dataset, n_tiles_failed=str(int((~ok).sum())),
                    on_tile_error=on_tile_error)
    half, levels = split_levels(half, spec.dim)
    tensors = {"features": half} if levels is None else {"features": half, LEVELS_KEY: levels}
    write_safetensors(tensors, features_path, metadata=metadata)
    index = pd.DataFrame({"row": np.arange(len(kept), dtype=np.int64), **{c: kept[c].astype(str) for c in
                                                                          INDEX_COLUMNS}})
    meta = {"encoder": encoder, "dataset": dataset, "format": cfg.tile_dataset(dataset).format,
            "weights_sha256": metadata["weights_sha256"], "dim": int(half.shape[1]),
            "dropped": [{"sample_id": s, "reason": "unreadable image"} for s in dropped],
            GROUP_SOURCE_KEY: samples.attrs[GROUP_SOURCE_KEY]}
    return write_parquet(index, index_path, schema="tile_feature_index", meta=meta)


def regroup_index(cfg: Config, dataset: str, index_path: Path) -> Path:
    """Bring an embedded dataset's index up to date with its configured groups; return its path.

    The groups (a groups CSV, a file-name pattern) are inputs of the embed_tiles job, so a changed
    grouping reruns it; the features do not depend on the groups, so only the index's ``group``
    column and ``group_source`` are rewritten, never the embeddings.
    """
    index, meta = read_parquet(index_path, schema="tile_feature_index")
    listing = list_samples(cfg, dataset)
    group = index["sample_id"].map(listing.set_index("sample_id")["group"]).fillna(index["group"]).astype(str)
    source = listing.attrs[GROUP_SOURCE_KEY]
    if group.equals(index["group"].astype(str)) and meta.get(GROUP_SOURCE_KEY) == source:
        return index_path
    log.info("%s: groups changed (%s); rewriting the index %s, features kept", dataset, source, index_path)
    return write_parquet(index.assign(group=group), index_path, schema="tile_feature_index",
                         meta={**meta, GROUP_SOURCE_KEY: source})


def _embed_samples(cfg: Config, shared: SharedEncoder, dataset: str,
                   samples: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    from pathfuse.encoders.inference import embed_batches, make_loader

    settings = cfg.settings.embedding
    loaded, runtime, embedder = shared.get()
    spec, encoder = loaded.spec, shared.encoder
    images = TileImages(samples, ResizeCrop.for_encoder(spec), settings.on_tile_error, dataset)
    feats = np.empty((len(images), embedder.width), dtype=np.float32)
    ok = np.zeros(len(images), dtype=bool)
    start = time.perf_counter()
    try:
        with tqdm(total=len(images), unit="tile", desc=f"{encoder}/{dataset}", mininterval=10) as bar:
            for (index, batch_ok), out in embed_batches(embedder, make_loader(images, settings, runtime)):
                rows = index.numpy()
                feats[rows], ok[rows] = out, batch_ok.numpy().astype(bool)
                bar.update(len(rows))
    finally:
        images.close()
    seconds = time.perf_counter() - start
    log.info("%s/%s: %d images in %.1f s (%.1f/s)", encoder, dataset, len(images), seconds,
             len(images) / max(seconds, 1e-9))
    metadata = {"encoder": encoder, "weights_sha256": loaded.weights_sha256,
                "weights_source": loaded.weights_source, "code_version": pathfuse.__version__,
                "schema_version": str(FEATURES_SCHEMA_VERSION), "embedding": spec.embedding,
                "input_px": str(spec.input_px), "dim": str(spec.dim), "precision": runtime.precision}
    return feats, ok, metadata

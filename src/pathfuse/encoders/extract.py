"""Stage entry ``embed_slides``: embed every tile of one shard of a cohort with one encoder.

Reads the tiling shard manifest, skips slides whose feature file already exists (atomic write ⇒
complete), embeds the others through one DataLoader, writes one safetensors file per slide
(``features`` float16 [n, dim], ``coords`` int64 [n, 2], provenance metadata) and finally the
feature shard manifest that Snakemake tracks. A killed job, re-run, only redoes unfinished
slides, and loads no model at all when every slide is done.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from tqdm import tqdm

import pathfuse
from pathfuse.config import Config
from pathfuse.encoders import byo, sources
from pathfuse.encoders.feature_files import (
    FEATURES_SCHEMA_VERSION,
    failure_reason,
    finished_features,
    manifest_row,
)
from pathfuse.encoders.levels import LEVELS_KEY, has_levels, split_levels, writes_levels
from pathfuse.encoders.registry import EncoderSpec, encoder_spec
from pathfuse.io import read_parquet, write_parquet, write_safetensors
from pathfuse.paths import shard_name
from pathfuse.settings import EmbeddingSettings

if TYPE_CHECKING:  # torch modules: imported inside the functions that embed
    from pathfuse.encoders.inference import Runtime
    from pathfuse.encoders.slide_tiles import ShardTiles

log = logging.getLogger(__name__)


def embed_shard(cfg: Config, encoder: str, cohort: str, shard: int) -> Path:
    """Embed shard ``shard`` of ``cohort`` with ``encoder``; return the feature shard manifest.

    An encoder with bring-your-own features for this cohort (``embedding.byo.slides``, or
    registry ``kind: byo``) is imported instead (:func:`pathfuse.encoders.byo.import_slide_features`),
    so the rule is the same either way.
    """
    spec = encoder_spec(cfg, encoder)
    if spec.is_byo or sources.slide_source(cfg, encoder, cohort) is not None:
        return byo.import_slide_features(cfg, encoder, cohort, shard)
    manifest_path = cfg.layout.tile_shard(cohort, shard_name(shard))
    manifest, _ = read_parquet(manifest_path, schema="tile_shard")
    rows: dict[str, dict[str, Any]] = {}
    pending: list[_PendingSlide] = []
    for rec in manifest.itertuples(index=False):
        slide_id = str(rec.slide_id)  # a string column; itertuples types its cells as any scalar
        out = cfg.layout.features(encoder, cohort, slide_id)
        if rec.status != "ok":
            reason = str(rec.reason or "skipped by tiling")
            rows[slide_id] = manifest_row(slide_id, "skipped", reason, 0, spec.dim, "")
            continue
        done = finished_features(out, encoder)
        if done is not None and writes_levels(cfg.settings.embedding.levels, "slides") and not has_levels(out):
            done = None  # embedded before level features were asked for
        if done is not None:
            n_tiles, dim, fmeta = done
            reason = failure_reason(int(fmeta.get("n_tiles_failed", 0)), fmeta.get("on_tile_error", "drop"))
            rows[slide_id] = manifest_row(slide_id, "ok", reason, n_tiles, dim, out)
            continue
        tiles = _read_tiles(rec, manifest_path)
        if tiles.empty:
            rows[slide_id] = manifest_row(slide_id, "skipped", "no tiles", 0, spec.dim, "")
        else:
            pending.append(_PendingSlide(slide_id, str(rec.path), tiles, out))
    meta: dict[str, Any] = {"encoder": encoder, "cohort": cohort, "shard": shard,
                            "n_resumed": sum(r["status"] == "ok" for r in rows.values())}
    if pending:
        embedded, run_meta = _embed_slides(cfg, spec, cohort, pending)
        rows.update(embedded)
        meta.update(run_meta)
    df = pd.DataFrame([rows[s] for s in manifest["slide_id"]],
                      columns=["slide_id", "status", "reason", "n_tiles", "dim", "features_path"])
    df = df.astype({"n_tiles": "int64", "dim": "int64"})
    return write_parquet(df, cfg.layout.feature_shard(encoder, cohort, shard_name(shard)),
                         schema="feature_shard", meta=meta)


@dataclass
class _PendingSlide:
    slide_id: str
    path: str
    tiles: pd.DataFrame
    out: Path


@dataclass
class _Assembler:
    """Collects in-order batch outputs per slide and writes each slide when its last tile is in."""

    cfg: Config
    spec: EncoderSpec
    cohort: str
    slides: list[_PendingSlide]
    offsets: np.ndarray
    metadata: dict[str, str]
    readers: list[str]  # the reader of each slide (recorded per feature file)
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    _slide: int = 0
    _filled: int = 0
    _chunks: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)

    def add(self, index: np.ndarray, ok: np.ndarray, feats: np.ndarray) -> None:
        """Take one batch (flat tile indices ascending, as the in-order loader yields them)."""
        start = 0
        while start < len(index):
            slide_end = self.offsets[self._slide + 1]
            stop = start + int(np.searchsorted(index[start:], slide_end))
            self._chunks.append((feats[start:stop], ok[start:stop]))
            self._filled += stop - start
            start = stop
            if self._filled == slide_end - self.offsets[self._slide]:
                self._finish()

    def _finish(self) -> None:
        slide = self.slides[self._slide]
        feats = np.concatenate([c[0] for c in self._chunks])
        ok = np.concatenate([c[1] for c in self._chunks])
        metadata = dict(self.metadata, reader=self.readers[self._slide])
        self._chunks, self._filled, self._slide = [], 0, self._slide + 1
        self.rows[slide.slide_id] = write_slide_features(self.cfg, self.spec, self.cohort, slide, feats, ok,
                                                         metadata)


def write_slide_features(cfg: Config, spec: EncoderSpec, cohort: str, slide: _PendingSlide,
                         feats: np.ndarray, ok: np.ndarray, metadata: dict[str, str]) -> dict[str, Any]:
    """Validate one slide's embeddings, apply the tile-error policy, write the file; return its row."""
    settings = cfg.settings.embedding
    coords = slide.tiles[["x", "y"]].to_numpy(np.int64)
    where = f"slide {slide.slide_id}"
    check_finite(feats, spec.name, where, "embedding", lambda i: f"tile {i} (x={coords[i, 0]}, y={coords[i, 1]})")
    n_failed = int((~ok).sum())
    if n_failed and n_failed / len(ok) > settings.max_tile_error_fraction:
        reason = (f"{n_failed}/{len(ok)} tiles unreadable (> embedding.max_tile_error_fraction="
                  f"{settings.max_tile_error_fraction})")
        log.error("slide %s: %s; no features written", slide.slide_id, reason)
        return manifest_row(slide.slide_id, "skipped", reason, 0, spec.dim, "")
    if n_failed:
        log.warning("slide %s: %d of %d tiles unreadable, %s", slide.slide_id, n_failed, len(ok),
                    "dropped" if settings.on_tile_error == "drop" else "zero-filled")
    keep = ok if settings.on_tile_error == "drop" else np.ones_like(ok)
    if not keep.any():
        return manifest_row(slide.slide_id, "skipped", "no readable tiles", 0, spec.dim, "")
    half = feats[keep].astype(np.float16)
    kept = coords[keep]
    check_finite(half, spec.name, where, "float16 embedding (overflow)",
                 lambda i: f"kept tile {i} (x={kept[i, 0]}, y={kept[i, 1]})")
    first = slide.tiles.iloc[0]
    meta = dict(metadata, slide_id=slide.slide_id, cohort=cohort, mpp=str(float(first["mpp"])),
                tile_px=str(int(first["tile_px"])), n_tiles_failed=str(n_failed),
                on_tile_error=str(settings.on_tile_error))
    half, levels = split_levels(half, spec.dim)
    tensors = {"features": half, "coords": coords[keep], **({} if levels is None else {LEVELS_KEY: levels})}
    write_safetensors(tensors, slide.out, metadata=meta)
    reason = failure_reason(n_failed, settings.on_tile_error)
    return manifest_row(slide.slide_id, "ok", reason, int(keep.sum()), half.shape[1], slide.out)


def check_finite(feats: np.ndarray, encoder: str, unit: str, what: str, describe: Callable[[int], str]) -> None:
    """Stop on NaN/Inf, naming the encoder, the slide or dataset, and the first bad item."""
    bad = np.flatnonzero(~np.isfinite(feats).all(axis=1))
    if len(bad):
        raise FloatingPointError(
            f"encoder {encoder!r}, {unit}: NaN/Inf in the {what} of {len(bad)} item(s), first {describe(bad[0])}; "
            "check the weights and the precision setting"
        )


def _embed_slides(cfg: Config, spec: EncoderSpec, cohort: str,
                  pending: list[_PendingSlide]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    from pathfuse.encoders.inference import Embedder, embed_batches, select_runtime
    from pathfuse.encoders.slide_tiles import ShardTiles, check_reader_mixing, reader_setting
    from pathfuse.encoders.transforms import ResizeCrop
    from pathfuse.encoders.weights import load_encoder

    settings = cfg.settings.embedding
    loaded = load_encoder(cfg, spec.name)
    if writes_levels(settings.levels, "slides"):
        loaded.model.with_levels(spec.levels)
    runtime = select_runtime(settings, spec.precision)
    embedder = Embedder(loaded, runtime)
    reader = reader_setting(cfg, cohort)
    check_reader_mixing(pending[0].out.parent.glob("*.safetensors"), reader, settings.allow_mixed_readers)
    dataset = ShardTiles([p.slide_id for p in pending], [p.path for p in pending], [p.tiles for p in pending],
                         ResizeCrop.for_encoder(spec), settings.on_tile_error, reader)
    metadata = {
        "encoder": spec.name, "weights_sha256": loaded.weights_sha256, "weights_source": loaded.weights_source,
        "code_version": pathfuse.__version__, "schema_version": str(FEATURES_SCHEMA_VERSION),
        "embedding": spec.embedding, "input_px": str(spec.input_px), "dim": str(spec.dim),
        "precision": runtime.precision, "reader_setting": reader,
    }
    assembler = _Assembler(cfg, spec, cohort, pending, dataset.offsets, metadata, dataset.reader_names)
    start = time.perf_counter()
    try:
        with tqdm(total=len(dataset), unit="tile", desc=f"{spec.name}/{cohort}", mininterval=10) as bar:
            for (index, ok), feats in embed_batches(embedder, _tile_batches(dataset, settings, runtime)):
                assembler.add(index.numpy(), ok.numpy().astype(bool), feats)
                bar.update(len(index))
    finally:
        dataset.close()
    seconds = time.perf_counter() - start
    log.info("%s/%s: %d tiles of %d slides in %.1f s (%.1f tiles/s, %s, %s)", spec.name, cohort, len(dataset),
             len(pending), seconds, len(dataset) / seconds, runtime.device, runtime.precision)
    run_meta = {"weights_sha256": loaded.weights_sha256, "device": str(runtime.device),
                "precision": runtime.precision, "seconds": seconds, "tiles_per_second": len(dataset) / seconds}
    return assembler.rows, run_meta


def _tile_batches(dataset: ShardTiles, settings: EmbeddingSettings, runtime: Runtime) -> Iterable[Any]:
    """Batches ``(uint8 images, index, ok)`` for :func:`~pathfuse.encoders.inference.embed_batches`.

    On a GPU, shards with JPEG-native slides go through :mod:`.gpu_decode` (workers only read
    bytes; nvJPEG decodes); otherwise the workers decode and the plain loader batches.
    """
    from pathfuse.encoders.inference import make_loader  # torch: only a job that embeds loads it

    if runtime.is_cuda and "jpeg" in dataset.reader_names:
        from pathfuse.encoders.gpu_decode import decoded_batches  # needs CUDA torchvision image ops

        return decoded_batches(dataset, settings, runtime.device)
    return make_loader(dataset, settings, runtime)


def _read_tiles(rec: Any, manifest_path: Path) -> pd.DataFrame:
    path = Path(rec.tiles_path)
    if not path.exists():
        raise FileNotFoundError(f"slide {rec.slide_id}: tiles file {path} listed in {manifest_path} is "
                                "missing; re-run the tiling of this shard")
    tiles, _ = read_parquet(path, schema="tiles")
    return tiles

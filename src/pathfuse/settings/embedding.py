"""The ``embedding`` section (sections/embedding.schema.yaml documents each key)."""

from __future__ import annotations

from typing import Literal

from pathfuse.settings.base import Number, Settings

#: A slide reader name: ``auto`` or a registered reader (the schema checks it against the registry).
Reader = str


class ByoTileSource(Settings):
    """An imported feature matrix of one tile dataset."""

    path: str
    ids: str | None


class ByoSettings(Settings):
    """Bring-your-own features: where they are and what to do with non-finite values."""

    nan_policy: Literal["error", "impute_mean", "drop"]
    #: An unreadable or wrong-width bag: stop before any job, or leave its slide out (recorded).
    on_bad_file: Literal["stop", "skip"]
    #: encoder -> cohort -> folder of HDF5 bags.
    slides: dict[str, dict[str, str]]
    #: encoder -> tile dataset -> feature matrix.
    tiles: dict[str, dict[str, ByoTileSource]]


class EmbeddingSettings(Settings):
    """Stage 1b settings: how encoders run and how tile read errors are handled."""

    weights_dir: str
    device: Literal["auto", "cpu", "cuda"]
    batch_size: int
    num_workers: int | None
    prefetch_factor: int
    cpu_precision: Literal["fp32", "bf16"]
    gpu_precision: Literal["auto", "fp32", "bf16", "fp16"]
    channels_last: Literal["auto", True, False]
    compile: bool
    reader: Reader
    allow_mixed_readers: bool
    on_tile_error: Literal["drop", "zero", "fail"]
    max_tile_error_fraction: Number
    #: Level features beside the embedding (shazam_levels): off, tile datasets only, or slides too.
    levels: Literal[False, "tiles", True]
    byo: ByoSettings

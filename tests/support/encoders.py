"""Builders shared by the encoder tests (tests/encoders/) and a few others: configs, slides, tiles.

Fixture files are written in the contract's formats directly (tifffile for slides,
pathfuse.io for Parquet) so these tests do not depend on the tiling stage's code.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tifffile
import yaml

from pathfuse.config import Config
from pathfuse.io import write_parquet
from pathfuse.paths import shard_name

REPO = Path(__file__).resolve().parents[2]
#: The shipped encoder registry, as the registry and embedding tests read it.
REGISTRY = yaml.safe_load((REPO / "src" / "pathfuse" / "resources" / "encoders.yaml").read_text())


def make_config(tmp_path: Path, encoders: tuple[str, ...] = ("demo_vit_a",), embedding: Mapping[str, Any] | None = None,
                extra_encoders: Mapping[str, Any] | None = None, **raw_overrides: Any) -> Config:
    """A small valid run config rooted in ``tmp_path`` (tile task pcam on a pcam_hdf5 dataset)."""
    registry = str(REPO / "src" / "pathfuse" / "resources" / "encoders.yaml")
    tmp_path.mkdir(parents=True, exist_ok=True)
    if extra_encoders:
        entries = yaml.safe_load((REPO / "src" / "pathfuse" / "resources" / "encoders.yaml").read_text())
        entries.update(extra_encoders)
        registry = str(tmp_path / "encoders.yaml")
        Path(registry).write_text(yaml.safe_dump(entries))
    raw: dict[str, Any] = {
        "results_dir": str(tmp_path / "results"),
        "seed": 42,
        "registries": {"tasks": str(REPO / "src" / "pathfuse" / "resources" / "tasks.yaml"), "encoders": registry},
        "encoders": list(encoders),
        "tasks": ["pcam"],
        "cohorts": {"demo": {"slides": str(tmp_path / "slides" / "*.tiff"), "n_shards": 1}},
        "tile_datasets": {"pcam_ds": {"path": str(tmp_path / "pcam"), "format": "pcam_hdf5"}},
        "task_data": {"pcam": {"dataset": "pcam_ds"}},
        "embedding": {"num_workers": 0, "batch_size": 5, **dict(embedding or {})},
    }
    raw.update(raw_overrides)
    return Config.from_dict(raw)


def write_slide(path: Path, width: int = 1024, height: int = 768, seed: int = 0) -> Path:
    """A two-level pyramidal JPEG TIFF at 0.5 µm/px that OpenSlide opens as generic-tiff."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([(xx * 255 // width), (yy * 255 // height), ((xx + yy) % 256)], axis=-1)
    image = np.clip(base + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    res = (1e4 / 0.5, 1e4 / 0.5)
    with tifffile.TiffWriter(path) as tif:
        tif.write(image, tile=(256, 256), compression="jpeg", photometric="rgb", subfiletype=0,
                  resolution=res, resolutionunit="CENTIMETER")
        tif.write(image[::2, ::2].copy(), tile=(256, 256), compression="jpeg", photometric="rgb",
                  subfiletype=1, resolution=(res[0] / 2, res[1] / 2), resolutionunit="CENTIMETER")
    return path


def corrupt_tile(path: Path, tile: int = 0) -> None:
    """Overwrite the start of one level-0 JPEG tile so decoding it fails."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        offset, count = page.dataoffsets[tile], page.databytecounts[tile]
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\x00" * min(64, count))


def write_tiles(cfg: Config, cohort: str, slide_id: str, slide: Path, level: int = 0, tile_px: int = 256,
                n: int | None = None) -> tuple[Path, pd.DataFrame]:
    """A ``tiles`` table (contract columns) on a regular grid of the slide."""
    downsample = 2 ** level
    read_px = tile_px // downsample
    step = tile_px
    xs, ys = np.meshgrid(np.arange(0, 1024 - step + 1, step), np.arange(0, 768 - step + 1, step))
    tiles = pd.DataFrame({
        "x": xs.ravel().astype(np.int64), "y": ys.ravel().astype(np.int64),
        "level": np.int32(level), "read_px": np.int32(read_px), "tile_px": np.int32(tile_px),
        "mpp": 0.5, "tissue": np.float32(1.0),
    })
    if n is not None:
        tiles = tiles.iloc[:n].reset_index(drop=True)
    out = cfg.layout.tiles(cohort, slide_id)
    write_parquet(tiles, out, schema="tiles", meta={"slide_id": slide_id, "path": str(slide)})
    return out, tiles


def write_tile_shard(cfg: Config, cohort: str, shard: int, rows: list[dict[str, Any]]) -> Path:
    """A ``tile_shard`` manifest; rows give slide_id, path, and tiles_path (or status/reason)."""
    full = [{"slide_id": r["slide_id"], "path": str(r.get("path", "")), "status": r.get("status", "ok"),
             "reason": r.get("reason", ""), "n_tiles": int(r.get("n_tiles", 0)),
             "tiles_path": str(r.get("tiles_path", ""))} for r in rows]
    return write_parquet(pd.DataFrame(full), cfg.layout.tile_shard(cohort, shard_name(shard)), schema="tile_shard")


def make_cohort(cfg: Config, tmp_path: Path, n_slides: int = 2, corrupt: bool = False) -> list[str]:
    """Slides + tiles + one shard manifest (plus a skipped slide); returns the ok slide ids."""
    rows, ids = [], []
    for i in range(n_slides):
        slide_id = f"slide{i}"
        slide = write_slide(tmp_path / "slides" / f"{slide_id}.tiff", seed=i)
        if corrupt and i == 0:
            corrupt_tile(slide, tile=1)
        tiles_path, tiles = write_tiles(cfg, "demo", slide_id, slide, level=i % 2, n=7 + 2 * i)
        rows.append({"slide_id": slide_id, "path": slide, "n_tiles": len(tiles), "tiles_path": tiles_path})
        ids.append(slide_id)
    rows.append({"slide_id": "zz_broken", "path": tmp_path / "missing.svs", "status": "skipped",
                 "reason": "missing_file: no such file"})
    write_tile_shard(cfg, "demo", 0, rows)
    return ids


def write_pcam(root: Path, n: dict[str, int], seed: int = 0, meta: bool = True) -> None:
    """PatchCamelyon-layout HDF5 files (x: [N, 96, 96, 3] uint8, y: [N, 1, 1, 1])."""
    import h5py

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, count in n.items():
        stem = root / f"camelyonpatch_level_2_split_{split}"
        with h5py.File(f"{stem}_x.h5", "w") as fh:
            fh["x"] = rng.integers(0, 255, (count, 96, 96, 3), dtype=np.uint8)
        with h5py.File(f"{stem}_y.h5", "w") as fh:
            fh["y"] = (np.arange(count) % 2).astype(np.uint8).reshape(count, 1, 1, 1)
        if meta:
            pd.DataFrame({"wsi": [f"wsi_{i // 3}" for i in range(count)]}).to_csv(f"{stem}_meta.csv", index=False)

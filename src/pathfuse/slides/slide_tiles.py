"""Tile one slide: resolution → tissue mask → tile grid → QC picture → tiles Parquet.

The QC picture is written before the tiles file and also for a slide that fails for lack of
tissue or tiles, so a person can see why; the tiles file is written last because its existence
marks the slide as done (resume).
"""

from __future__ import annotations

import logging
import os
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pathfuse.io import write_parquet
from pathfuse.settings import TilingSettings
from pathfuse.slides.errors import SlideError
from pathfuse.slides.grid import locate_tiles, plan_grid
from pathfuse.slides.mpp import resolve_mpp
from pathfuse.slides.qc import draw_qc
from pathfuse.slides.readers import open_reader
from pathfuse.slides.readers.base import SlideSource, read_overview
from pathfuse.slides.tissue import TissueMask, segment_tissue

log = logging.getLogger(__name__)

#: Tiling reads overviews with OpenSlide whatever ``embedding.reader`` says: the tissue mask, and
#: so the tile grid, must not depend on which decoder fetches the tiles' pixels later.
TILING_READER = "openslide"


@dataclass(frozen=True)
class SlideJob:
    """One slide to tile and where its outputs go."""

    cohort: str
    slide_id: str
    path: str
    override_mpp: float | None
    override_hint: str  # how to give this slide an mpp override (named in mpp errors)
    tiles_path: Path
    qc_path: Path
    seed: int


def grid_key(settings: TilingSettings, job: SlideJob) -> dict[str, Any]:
    """What a slide's tiles depend on besides the file; stored to decide whether to resume."""
    key = settings.grid_key()
    key["seed"] = job.seed
    key["override_mpp"] = job.override_mpp
    return key


def tile_slide(job: SlideJob, settings: TilingSettings) -> int:
    """Tile one slide, write its QC picture and tiles file; return the number of tiles.

    Raises:
        SlideError: the slide cannot be tiled; the message says why and how to fix it.
    """
    with closing(open_reader(job.path, TILING_READER)) as reader:
        mpp0, mpp_source = resolve_mpp(
            reader.resolution,
            source=reader.name,
            override=job.override_mpp,
            allow_objective_power=settings.allow_objective_power,
            mpp_range=settings.mpp_range,
            fix=job.override_hint,
        )
        plan = plan_grid(reader.level_downsamples, mpp0, settings)
        thumbnail, thumb_scale, tissue = _overviews(reader, mpp0, settings)
        tiles, n_grid = locate_tiles(reader.dimensions, plan, tissue, settings, np.random.default_rng(job.seed))
        vendor = reader.vendor
        power = reader.resolution.objective_power
        facts: dict[str, Any] = {
            "slide_id": job.slide_id,
            "path": job.path,
            "cohort": job.cohort,
            "vendor": vendor,
            "dimensions": list(reader.dimensions),
            "level_count": reader.level_count,
            "level_downsamples": [float(d) for d in reader.level_downsamples],
            "level0_mpp": mpp0,
            "mpp_source": mpp_source,
            "objective_power": None if power is None else f"{power:g}",
        }

    problem = _problem(tissue, tiles.empty, n_grid, settings)
    details = (
        f"{vendor or 'unknown vendor'}, {facts['dimensions'][0]}×{facts['dimensions'][1]} px at {mpp0:.3g} µm/px "
        f"({mpp_source})  ·  tiles {settings.tile_px} px at {settings.target_mpp:g} µm/px, tissue ≥ "
        f"{settings.min_tissue:g}  ·  {len(tiles)} tiles  ·  tissue {tissue.area_mm2:.2f} mm²"
    )
    draw_qc(job.qc_path, thumbnail, thumb_scale, tissue, tiles, plan.size0, job.slide_id, details,
            problem=problem[1] if problem else "")
    if problem:
        cause, message = problem
        raise SlideError(cause, f"{message}; see the QC picture {job.qc_path}")

    meta = {
        **facts,
        "target_mpp": settings.target_mpp,
        "tile_px": settings.tile_px,
        "stride_px": settings.stride,
        "read_level": plan.level,
        "read_px": plan.read_px,
        "n_grid": n_grid,
        "n_tiles": len(tiles),
        "tissue_threshold": tissue.threshold,
        "tissue_mm2": tissue.area_mm2,
        "qc": os.fspath(job.qc_path),
        "grid_key": grid_key(settings, job),
    }
    write_parquet(tiles, job.tiles_path, schema="tiles", meta=meta)
    log.info("%s: %d tiles of %d grid positions (level %d, %d px read → %d px)", job.slide_id,
             len(tiles), n_grid, plan.level, plan.read_px, settings.tile_px)
    return len(tiles)


def _overviews(reader: SlideSource, mpp0: float, settings: TilingSettings
               ) -> tuple[np.ndarray, tuple[float, float], TissueMask]:
    """The QC thumbnail and the tissue mask, from one read at the finer of their two scales."""
    width0, height0 = reader.dimensions
    thumb_ds = max(1.0, max(width0, height0) / settings.qc_px)
    seg_ds = max(1.0, settings.seg_mpp / mpp0)
    finer, finer_scale = read_overview(reader, min(thumb_ds, seg_ds))

    def coarser(downsample: float) -> tuple[np.ndarray, tuple[float, float]]:
        size = (max(1, round(width0 / downsample)), max(1, round(height0 / downsample)))
        if size == (finer.shape[1], finer.shape[0]):
            return finer, finer_scale
        image = Image.fromarray(finer).resize(size, Image.Resampling.BOX)
        return np.asarray(image), (width0 / size[0], height0 / size[1])

    thumbnail, thumb_scale = coarser(thumb_ds)
    overview, seg_scale = coarser(seg_ds)
    return thumbnail, thumb_scale, segment_tissue(overview, seg_scale, mpp0, settings)


def _problem(tissue: TissueMask, no_tiles: bool, n_grid: int, settings: TilingSettings
             ) -> tuple[str, str] | None:
    """(cause, message) when the slide yields nothing to embed, else None."""
    size = f"{settings.tile_px} px at {settings.target_mpp:g} µm/px"
    if n_grid == 0:
        return "no_tiles", (
            f"zero tiles: the slide is smaller than one tile ({size}). Lower tiling.tile_px or "
            "leave the slide out"
        )
    if not tissue.mask.any():
        return "no_tissue", (
            f"no tissue found (saturation threshold {tissue.threshold:.0f}/255 at "
            f"{tissue.mpp:.1f} µm/px). If the slide has tissue, lower tiling.min_saturation or set "
            "tiling.threshold to a number; otherwise leave the slide out"
        )
    if no_tiles:
        return "no_tiles", (
            f"zero tiles: none of {n_grid} grid tiles ({size}) has tissue fraction ≥ "
            f"{settings.min_tissue:g}. Lower tiling.min_tissue or tiling.tile_px, or leave the slide out"
        )
    return None

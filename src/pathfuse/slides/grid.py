"""The tile grid of a slide at the target resolution, and each tile's tissue fraction.

Tiles are squares of ``tile_px`` output pixels at ``target_mpp``. Each is read at the coarsest
pyramid level that is still at least as fine as the target (so a read never upsamples by more
than LEVEL_TOLERANCE) and resized to ``tile_px``. Only tiles fully inside the slide are kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pathfuse.settings import TilingSettings
from pathfuse.slides.errors import SlideError
from pathfuse.slides.reader import level_for_downsample
from pathfuse.slides.tissue import TissueMask

#: A slide may be up to this factor coarser than the target (e.g. 0.263 µm/px for a 0.25
#: target); beyond it tiles would be blurry upsamplings and the slide is refused.
MAX_UPSAMPLE = 1.15
#: Read exactly ``tile_px`` when the exact read size is within this fraction of it (e.g. a
#: 0.499 µm/px slide for a 0.5 target): a 0.2% scale error is harmless, resampling blurs.
SNAP_TOLERANCE = 0.01


@dataclass(frozen=True)
class GridPlan:
    """Where and how tiles are read: one level and read size for the whole slide."""

    level: int
    read_px: int
    downsample: float  # level-0 px per output px
    size0: float  # level-0 px covered by a tile (as read)
    stride0: float  # level-0 px between neighbouring tiles


def plan_grid(level_downsamples: Sequence[float], level0_mpp: float, settings: TilingSettings) -> GridPlan:
    """Choose the read level and size for the target mpp.

    Raises:
        SlideError: (mpp_too_coarse) the slide is coarser than the target beyond MAX_UPSAMPLE.
    """
    downsample = settings.target_mpp / level0_mpp
    if downsample * MAX_UPSAMPLE < 1:
        raise SlideError(
            "mpp_too_coarse",
            f"the slide's resolution {level0_mpp:.4g} µm/px is coarser than the target "
            f"{settings.target_mpp:g} µm/px; tiles would be upsampled {1 / downsample:.2f}x. "
            f"Set tiling.target_mpp ≥ {level0_mpp:.3g} or leave the slide out",
        )
    level = level_for_downsample(level_downsamples, downsample)
    level_ds = float(level_downsamples[level])
    read_px = max(1, round(settings.tile_px * downsample / level_ds))
    if abs(read_px - settings.tile_px) <= SNAP_TOLERANCE * settings.tile_px:
        read_px = settings.tile_px
    return GridPlan(
        level=level,
        read_px=read_px,
        downsample=downsample,
        size0=max(settings.tile_px * downsample, read_px * level_ds),
        stride0=settings.stride * downsample,
    )


def grid_positions(dimensions: tuple[int, int], plan: GridPlan) -> tuple[np.ndarray, np.ndarray]:
    """Level-0 top-left x, y (int64, row-major) of every grid tile fully inside the slide."""
    axes = []
    for extent in dimensions:
        n = math.floor((extent - plan.size0) / plan.stride0) + 1 if extent >= plan.size0 else 0
        axes.append(np.floor(np.arange(n) * plan.stride0).astype(np.int64))
    ys, xs = np.meshgrid(axes[1], axes[0], indexing="ij")
    return xs.ravel(), ys.ravel()


def tissue_fractions(tissue: TissueMask, xs: np.ndarray, ys: np.ndarray, size0: float) -> np.ndarray:
    """Fraction of tissue-mask pixels under each tile (float32), via a summed-area table."""
    mask = tissue.mask
    height, width = mask.shape
    integral = np.zeros((height + 1, width + 1), np.int64 if mask.size >= 2**31 else np.int32)
    np.cumsum(np.cumsum(mask, axis=0, dtype=integral.dtype), axis=1, out=integral[1:, 1:])
    sx, sy = tissue.scale

    def bounds(start: np.ndarray, scale: float, limit: int) -> tuple[np.ndarray, np.ndarray]:
        low = np.clip(np.round(start / scale).astype(np.int64), 0, limit - 1)
        high = np.clip(np.round((start + size0) / scale).astype(np.int64), low + 1, limit)
        return low, high

    x0, x1 = bounds(xs, sx, width)
    y0, y1 = bounds(ys, sy, height)
    inside = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    return (inside / ((x1 - x0) * (y1 - y0))).astype(np.float32)


def locate_tiles(
    dimensions: tuple[int, int],
    plan: GridPlan,
    tissue: TissueMask,
    settings: TilingSettings,
    rng: np.random.Generator,
) -> tuple[pd.DataFrame, int]:
    """The slide's tiles as in the ``tiles`` contract, and the number of grid positions.

    Tiles with tissue fraction ≥ ``min_tissue`` are kept; with ``max_tiles_per_slide``, a
    seeded random subset of them (kept in row-major order).
    """
    xs, ys = grid_positions(dimensions, plan)
    fractions = tissue_fractions(tissue, xs, ys, plan.size0) if len(xs) else np.zeros(0, np.float32)
    keep = np.flatnonzero(fractions >= settings.min_tissue)
    if settings.max_tiles_per_slide and len(keep) > settings.max_tiles_per_slide:
        keep = np.sort(rng.choice(keep, settings.max_tiles_per_slide, replace=False))
    n = len(keep)
    tiles = pd.DataFrame({
        "x": xs[keep],
        "y": ys[keep],
        "level": np.full(n, plan.level, np.int32),
        "read_px": np.full(n, plan.read_px, np.int32),
        "tile_px": np.full(n, settings.tile_px, np.int32),
        "mpp": np.full(n, settings.target_mpp, np.float64),
        "tissue": fractions[keep],
    })
    return tiles, len(xs)

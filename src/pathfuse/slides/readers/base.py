"""The slide-reader seam: what tiling and embedding need from a slide, whoever decodes it.

pathfuse reads slides through :class:`SlideSource` only, so a second pixel source (the
JPEG-native reader, or a lab's own) plugs in without touching the stages. The contract is
small on purpose: geometry (level sizes and downsamples), what the file states about its
resolution, a tile read that may decode at reduced scale, and a region read for overviews.
A reader that can also hand out a tile's compressed JPEG streams implements
:class:`RawTileSource`, which is what GPU decoding uses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np
from PIL import Image

#: Accept a pyramid level whose downsample exceeds the wanted one by up to this factor (the
#: tiny upsampling is invisible, reading 4x fewer pixels is not); e.g. levels at 4.016.
LEVEL_TOLERANCE = 1.01
#: Largest side (level pixels) read at once for an overview, so memory stays bounded.
OVERVIEW_BLOCK_PX = 2048
#: Unscanned or missing areas read as this colour in every reader (OpenSlide's transparent → white).
BACKGROUND = (255, 255, 255)


class StoredResolution(NamedTuple):
    """What the file itself states about its resolution (None = not stated or not a number)."""

    mpp_x: float | None
    mpp_y: float | None
    objective_power: float | None


@runtime_checkable
class SlideSource(Protocol):
    """A slide's geometry and pixels; one instance per slide and worker process.

    Implementations open their file lazily (and again after a fork) and pickle without
    handles, so DataLoader workers each get their own.
    """

    name: str  # registry name, recorded in feature metadata
    path: Path

    @property
    def vendor(self) -> str:
        """The scanner format the file is in (e.g. ``aperio``), or "" when unknown."""
        ...

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 (width, height) in pixels."""
        ...

    @property
    def level_count(self) -> int:
        """How many pyramid levels the file has."""
        ...

    @property
    def level_dimensions(self) -> Sequence[tuple[int, int]]:
        """(width, height) of every level, level 0 first."""
        ...

    @property
    def level_downsamples(self) -> Sequence[float]:
        """Each level's downsample factor relative to level 0."""
        ...

    @property
    def resolution(self) -> StoredResolution:
        """What the file states about its resolution (mpp and objective power)."""
        ...

    @property
    def properties(self) -> Mapping[str, str]:
        """The file's metadata as text key/value pairs (for provenance and error messages)."""
        ...

    def read_tile(self, x: int, y: int, level: int, read_px: int, out_px: int) -> np.ndarray:
        """The square ``read_px`` at ``level`` from level-0 (x, y), as writable uint8 (out_px, out_px, 3)."""
        ...

    def read_region(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        """A region at ``level`` from level-0 (x, y) as uint8 (height, width, 3) on white background."""
        ...

    def close(self) -> None:
        """Release the file handle (the next read opens it again)."""
        ...


@dataclass(frozen=True)
class RawRegion:
    """The compressed JPEG tiles under one tile read, and how to assemble them.

    Coordinates are pixels of the read level on a canvas whose origin is the top-left corner
    of the first covered JPEG tile. ``streams[i]`` is a complete JPEG stream (shared tables
    spliced in), or None for a tile that is absent in the file (background).
    """

    streams: tuple[bytes | None, ...]
    keys: tuple[tuple[int, int, int], ...]  # (level, tile column, tile row) per stream, for caching
    origins: tuple[tuple[int, int], ...]  # canvas (x, y) of each stream's top-left pixel
    tile_size: tuple[int, int]  # (width, height) of one JPEG tile
    canvas: tuple[int, int]  # (width, height)
    valid: tuple[int, int]  # canvas (width, height) inside the level; beyond it is background
    box: tuple[int, int, int, int]  # the read square on the canvas: (x0, y0, x1, y1)
    out_px: int
    rgb_encoded: bool = False  # components are R, G, B (Aperio): a decoder must not convert from YCbCr


@runtime_checkable
class RawTileSource(Protocol):
    """Optional capability: hand out a tile read's compressed streams (for GPU decoding)."""

    def raw_region(self, x: int, y: int, level: int, read_px: int, out_px: int) -> RawRegion | None:
        """The JPEG tiles of this read, or None when this read cannot be served raw."""
        ...


def positive_number(properties: Mapping[str, str], key: str) -> float | None:
    """A positive finite float property, or None when absent or not a number."""
    try:
        value = float(properties[key])
    except (KeyError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def reduction_factor(read_px: int, out_px: int) -> int:
    """The largest of 8, 4, 2, 1 by which a ``read_px`` square can shrink and still cover ``out_px``.

    Every reader reduces a read by this factor with a box-like filter first (libjpeg's DCT
    scaling computes that filter for free) and bilinear-resizes only the remaining non-power-of-two
    step, so the readers agree on the pixels (tests/slides/test_readers_equivalence.py).
    """
    return next((k for k in (8, 4, 2) if read_px >= out_px * k), 1)


def level_for_downsample(downsamples: Sequence[float], downsample: float) -> int:
    """The coarsest pyramid level not coarser than ``downsample`` (within LEVEL_TOLERANCE)."""
    fitting = [i for i, d in enumerate(downsamples) if d <= downsample * LEVEL_TOLERANCE]
    return max(fitting, key=lambda i: downsamples[i]) if fitting else 0


def read_overview(reader: SlideSource, downsample: float) -> tuple[np.ndarray, tuple[float, float]]:
    """The whole slide downsampled by about ``downsample`` (≥ 1), read block by block.

    Reading blocks of at most OVERVIEW_BLOCK_PX keeps memory at the size of the result,
    also for a slide without a low-resolution pyramid level.

    Returns:
        (RGB uint8 array, (sx, sy)): level-0 pixels per overview pixel along x and y.
    """
    width0, height0 = reader.dimensions
    downsample = max(1.0, downsample)
    out_w, out_h = max(1, round(width0 / downsample)), max(1, round(height0 / downsample))
    level = level_for_downsample(reader.level_downsamples, downsample)
    level_w, level_h = reader.level_dimensions[level]
    level_ds = reader.level_downsamples[level]
    fx, fy = level_w / out_w, level_h / out_h  # level px per output px
    block = max(1, int(OVERVIEW_BLOCK_PX // max(fx, fy, 1.0)))
    out = np.empty((out_h, out_w, 3), np.uint8)
    for oy0 in range(0, out_h, block):
        oy1 = min(out_h, oy0 + block)
        ly0, ly1 = round(oy0 * fy), min(level_h, max(round(oy1 * fy), round(oy0 * fy) + 1))
        for ox0 in range(0, out_w, block):
            ox1 = min(out_w, ox0 + block)
            lx0, lx1 = round(ox0 * fx), min(level_w, max(round(ox1 * fx), round(ox0 * fx) + 1))
            region = reader.read_region(
                math.floor(lx0 * level_ds), math.floor(ly0 * level_ds), level, lx1 - lx0, ly1 - ly0
            )
            if region.shape[:2] != (oy1 - oy0, ox1 - ox0):
                region = np.asarray(Image.fromarray(region).resize((ox1 - ox0, oy1 - oy0), Image.Resampling.BOX))
            out[oy0:oy1, ox0:ox1] = region
    return out, (width0 / out_w, height0 / out_h)

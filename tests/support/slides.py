"""Helpers for the tiling tests: synthetic pyramidal TIFFs and the real slides of ../shared.

Synthetic slides are written with tifffile (JPEG tiles, one page per level) so that OpenSlide
reads them through its real generic-tiff or Aperio code paths.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))  # svs_writer: Aperio-style SVS shared with the benchmarks
SHARED_SLIDES = REPO.parent / "shared" / "data" / "slides"
BACKGROUND = (242, 240, 244)
TISSUE = (196, 110, 168)


def write_svs(path: Path, side: int = 4000, tile: int = 240, **kwargs: Any) -> Path:
    """A 40x Aperio-style SVS (RGB-encoded JPEG tiles, shared JPEGTables, 4x pyramid)."""
    from svs_writer import write_aperio_svs

    return write_aperio_svs(path, side, tile=tile, **kwargs)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 images (inf when identical)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def needs_shared(name: str) -> Path:
    """Path of a real test slide, or skip the test saying why."""
    path = SHARED_SLIDES / name
    if not path.is_file():
        pytest.skip(f"real slide {path} absent (../shared/data/slides is not part of a fresh clone)")
    return path


def synthetic_image(width: int, height: int, ellipses: list[tuple[float, float, float, float]],
                    seed: int = 0) -> np.ndarray:
    """Glass-coloured RGB image with textured pink ellipses (cx, cy, rx, ry as fractions).

    The shapes are drawn on a 4x coarser grid and the texture is one repeated 64 px patch,
    which keeps a 2048 px slide at a few milliseconds.
    """
    rng = np.random.default_rng(seed)
    small_h, small_w = -(-height // 4), -(-width // 4)
    yy, xx = np.mgrid[0:small_h, 0:small_w]
    inside = np.zeros((small_h, small_w), bool)
    for cx, cy, rx, ry in ellipses:
        inside |= ((xx / small_w - cx) / rx) ** 2 + ((yy / small_h - cy) / ry) ** 2 <= 1
    inside = np.repeat(np.repeat(inside, 4, axis=0), 4, axis=1)[:height, :width]
    patch = np.clip(np.array(TISSUE) + rng.integers(-25, 25, size=(64, 64, 1)), 0, 255).astype(np.uint8)
    texture = np.tile(patch, (-(-height // 64), -(-width // 64), 1))[:height, :width]
    return np.where(inside[..., None], texture, np.array(BACKGROUND, np.uint8))


def write_pyramid(path: Path, image: np.ndarray, *, levels: int = 3, mpp: float | None = 0.5,
                  description: str | None = None, dpi: float | None = None) -> Path:
    """Write ``image`` as a tiled JPEG pyramid (downsample 2 per level) OpenSlide reads."""
    with tifffile.TiffWriter(path) as tif:
        for level in range(levels):
            data = image[:: 2**level, :: 2**level]
            if min(data.shape[:2]) < 16:
                break
            kwargs: dict[str, Any] = {}
            if dpi is not None:
                kwargs.update(resolution=(dpi / 2**level, dpi / 2**level), resolutionunit="INCH")
            elif mpp is not None:
                per_cm = 10000 / (mpp * 2**level)
                kwargs.update(resolution=(per_cm, per_cm), resolutionunit="CENTIMETER")
            tif.write(
                data, tile=(256, 256), compression="jpeg", photometric="rgb", metadata=None,
                subfiletype=0 if level == 0 else 1,
                description=description if level == 0 else None, **kwargs,
            )
    return path


def corrupt_tile(path: Path, tile: int, level: int = 0) -> Path:
    """Overwrite one tile's JPEG data with zeros (the file stays openable)."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[level]
        offset, count = page.dataoffsets[tile], page.databytecounts[tile]
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(bytes(count))
    return path

"""A demo slide on disk: the tissue rendered at full size, its pyramid, a tiled JPEG TIFF."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pathfuse.demo.tissue import TILE_PX, TissueLook, downsample2, render_tissue, upsample2
from pathfuse.io import atomic_path


def aperio_description(width: int, height: int, mpp: float, quality: int) -> str:
    """First-page ImageDescription in the Aperio style, which makes OpenSlide's vendor ``aperio``."""
    mag = round(10.0 / mpp)
    return (f"Aperio Image Library v12.0.16 \r\n{width}x{height} [0,0 {width}x{height}] "
            f"({TILE_PX}x{TILE_PX}) JPEG/RGB Q={quality}|AppMag = {mag}|MPP = {mpp:.4f}"
            "|Filename = pathfuse-demo|ScanScope ID = DEMO")


def write_pyramid_tiff(path: Path, levels: list[np.ndarray], mpp: float, quality: int, aperio: bool) -> None:
    """Write a tiled (256²), JPEG-compressed pyramid, one page per level.

    ``levels`` are the images of level 0, 1, … (each half the size of the one before); level
    0 has ``mpp`` µm/px. Level 0 is ``subfiletype`` 0 and every reduced level 1, with X/Y
    resolution in pixels per centimetre: what OpenSlide needs to report ``openslide.mpp-x``
    for a generic TIFF. Written to a temporary file and renamed, so a killed run never leaves
    a readable half-slide.
    """
    import tifffile

    height, width = levels[0].shape[:2]
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=False) as tif:
        for index, image in enumerate(levels):
            per_cm = 1e4 / (mpp * 2**index)
            tif.write(
                image, photometric="rgb", tile=(TILE_PX, TILE_PX), compression="jpeg",
                compressionargs={"level": quality}, subfiletype=0 if index == 0 else 1,
                resolution=(per_cm, per_cm), resolutionunit="CENTIMETER",
                description=aperio_description(width, height, mpp, quality) if aperio and index == 0 else None,
                metadata=None, software="pathfuse demo", maxworkers=1,
            )


def render_slide(rng: np.random.Generator, width: int, height: int, mpp: float, look: TissueLook,
                 min_level_px: int = TILE_PX) -> list[np.ndarray]:
    """The pyramid levels (level 0 first) of a synthetic slide of ``width``×``height`` px.

    Tissue is drawn at twice the level-0 pixel size (the 0.5 µm/px that tiling reads) and
    level 0 is interpolated from it: four times less rendering, and the level the pipeline
    reads is a genuine render rather than a downsampled one.
    """
    level1 = render_tissue(rng, height // 2, width // 2, 2 * mpp, look, centre_bias=1.2)
    levels = [upsample2(level1), level1]
    while min(levels[-1].shape[:2]) // 2 >= min_level_px:
        levels.append(downsample2(levels[-1]))
    return levels

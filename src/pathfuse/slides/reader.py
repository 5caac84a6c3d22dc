"""OpenSlide access: open a slide with clear errors, read tiles and downsampled overviews.

:class:`SlideReader` is the one reader of slide pixels in pathfuse: the tiling stage uses it
for the tissue overview and the embedding stage for tiles. It opens the file lazily and again
after a fork, and pickles without its handle, so a DataLoader worker gets its own OpenSlide
object (OpenSlide handles are not shareable across processes).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import openslide
import tifffile
from PIL import Image

from pathfuse.slides.errors import SlideError

#: Accept a pyramid level whose downsample exceeds the wanted one by up to this factor (the
#: tiny upsampling is invisible, reading 4x fewer pixels is not); e.g. levels at 4.016.
LEVEL_TOLERANCE = 1.01
#: Largest side (level pixels) read at once for an overview, so memory stays bounded.
OVERVIEW_BLOCK_PX = 2048
BACKGROUND = (255, 255, 255)
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def open_slide(path: str | os.PathLike[str]) -> openslide.OpenSlide:
    """Open a slide with OpenSlide, turning every failure into a :class:`SlideError`."""
    path = Path(path)
    if not path.is_file():
        raise SlideError("missing_file", f"{path}: no such file. Fix the cohort's glob or manifest path")
    try:
        vendor = openslide.OpenSlide.detect_format(str(path))
    except openslide.OpenSlideError as err:
        raise SlideError("unreadable", f"{path}: OpenSlide cannot read it ({err})") from err
    if vendor is None:
        raise SlideError(*_diagnose_unknown(path))
    try:
        return openslide.OpenSlide(str(path))
    except (openslide.OpenSlideError, OSError) as err:
        raise SlideError(
            "unreadable",
            f"{path}: OpenSlide detects format {vendor!r} but cannot open it ({err}); the file is "
            "probably truncated or damaged: copy or export it again, or remove it",
        ) from err


def _diagnose_unknown(path: Path) -> tuple[str, str]:
    """(cause, message) for a file OpenSlide does not recognise: damaged, or another format."""
    convert = ("Convert it to a tiled pyramidal TIFF (e.g. `vips tiffsave in.tif out.tiff --tile --pyramid "
               "--compression jpeg`) or remove it")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic[:4] in TIFF_MAGIC:
        try:
            with tifffile.TiffFile(path) as tif:
                tiled = tif.pages.first.is_tiled
        except (tifffile.TiffFileError, OSError, ValueError, IndexError) as err:
            return "unreadable", (f"{path}: a TIFF file that cannot be parsed ({err}); it is probably "
                                  "truncated or damaged: copy or export it again, or remove it")
        if not tiled:
            return "unsupported_format", f"{path}: a TIFF without tiles, which OpenSlide does not read. {convert}"
        return "unreadable", (f"{path}: a tiled TIFF OpenSlide cannot read; it is probably truncated or "
                              "damaged: copy or export it again, or remove it")
    return "unsupported_format", (
        f"{path}: not a whole-slide format OpenSlide reads (Aperio, Hamamatsu, Leica, MIRAX, Philips, "
        f"Sakura, Ventana, DICOM, generic tiled TIFF). {convert}"
    )


def level_for_downsample(downsamples: Sequence[float], downsample: float) -> int:
    """The coarsest pyramid level not coarser than ``downsample`` (within LEVEL_TOLERANCE)."""
    fitting = [i for i, d in enumerate(downsamples) if d <= downsample * LEVEL_TOLERANCE]
    return max(fitting, key=lambda i: downsamples[i]) if fitting else 0


def is_opaque(region: Image.Image) -> bool:
    """True when no pixel of an RGBA region is transparent (the usual case inside a slide)."""
    return bool(np.frombuffer(region.tobytes("raw", "A"), np.uint8).min() == 255)


def to_rgb(region: Image.Image) -> Image.Image:
    """RGBA from OpenSlide → RGB, with transparent (unscanned) pixels as white background."""
    if region.mode == "RGB":
        return region
    if is_opaque(region):
        return region.convert("RGB")
    rgb = Image.new("RGB", region.size, BACKGROUND)
    rgb.paste(region, mask=region.getchannel("A"))
    return rgb


class SlideReader:
    """Reads tiles and overviews of one slide; one instance per slide and worker process.

    Example (embedding a tiles-parquet row)::

        reader = SlideReader(path)
        rgb = reader.read_tile(row.x, row.y, row.level, row.read_px, row.tile_px)  # HxWx3 uint8
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._slide: openslide.OpenSlide | None = None
        self._pid: int | None = None

    @property
    def slide(self) -> openslide.OpenSlide:
        """The OpenSlide handle, opened on first use and again in a forked child."""
        if self._slide is None or self._pid != os.getpid():
            self._slide = open_slide(self.path)
            self._pid = os.getpid()
        return self._slide

    def read_tile(self, x: int, y: int, level: int, read_px: int, tile_px: int) -> np.ndarray:
        """One tile as a writable uint8 array (tile_px, tile_px, 3).

        Args:
            x, y: level-0 top-left corner.
            level: pyramid level to read from.
            read_px: side of the square read at that level.
            tile_px: output side; the read is resized (bilinear, antialiased) when different.
        """
        read_px, tile_px = int(read_px), int(tile_px)  # rows of a DataFrame may come as floats
        region = self.read_rgba(x, y, level, read_px, read_px)
        if read_px == tile_px and is_opaque(region):
            # The common case, kept to one packing pass: within a few % of a bare read_region.
            data = region.tobytes("raw", "RGB")
        else:
            image = to_rgb(region)
            if read_px != tile_px:
                image = image.resize((tile_px, tile_px), Image.Resampling.BILINEAR)
            data = image.tobytes()
        return np.frombuffer(bytearray(data), np.uint8).reshape(tile_px, tile_px, 3)

    def read_rgba(self, x: int, y: int, level: int, width: int, height: int) -> Image.Image:
        """A region as OpenSlide's RGBA image; its errors become :class:`SlideError` naming the file."""
        try:
            return self.slide.read_region((int(x), int(y)), int(level), (int(width), int(height)))
        except openslide.OpenSlideError as err:
            raise SlideError(
                "unreadable",
                f"{self.path}: reading {width}x{height} px at ({x}, {y}), level {level} failed "
                f"({err}); the file is probably damaged: copy or export it again, or remove it",
            ) from err

    def read_rgb(self, x: int, y: int, level: int, width: int, height: int) -> Image.Image:
        """A region as an RGB image on white background."""
        return to_rgb(self.read_rgba(x, y, level, width, height))

    def overview(self, downsample: float) -> tuple[np.ndarray, tuple[float, float]]:
        """The whole slide downsampled by about ``downsample`` (≥ 1), read block by block.

        Reading blocks of at most OVERVIEW_BLOCK_PX keeps memory at the size of the result,
        also for a slide without a low-resolution pyramid level.

        Returns:
            (RGB uint8 array, (sx, sy)): level-0 pixels per overview pixel along x and y.
        """
        slide = self.slide
        width0, height0 = slide.dimensions
        downsample = max(1.0, downsample)
        out_w, out_h = max(1, round(width0 / downsample)), max(1, round(height0 / downsample))
        level = level_for_downsample(slide.level_downsamples, downsample)
        level_w, level_h = slide.level_dimensions[level]
        level_ds = slide.level_downsamples[level]
        fx, fy = level_w / out_w, level_h / out_h  # level px per output px
        block = max(1, int(OVERVIEW_BLOCK_PX // max(fx, fy, 1.0)))
        out = np.empty((out_h, out_w, 3), np.uint8)
        for oy0 in range(0, out_h, block):
            oy1 = min(out_h, oy0 + block)
            ly0, ly1 = round(oy0 * fy), min(level_h, max(round(oy1 * fy), round(oy0 * fy) + 1))
            for ox0 in range(0, out_w, block):
                ox1 = min(out_w, ox0 + block)
                lx0, lx1 = round(ox0 * fx), min(level_w, max(round(ox1 * fx), round(ox0 * fx) + 1))
                image = self.read_rgb(
                    math.floor(lx0 * level_ds), math.floor(ly0 * level_ds), level, lx1 - lx0, ly1 - ly0
                )
                if image.size != (ox1 - ox0, oy1 - oy0):
                    image = image.resize((ox1 - ox0, oy1 - oy0), Image.Resampling.BOX)
                out[oy0:oy1, ox0:ox1] = np.asarray(image)
        return out, (width0 / out_w, height0 / out_h)

    def close(self) -> None:
        """Release the OpenSlide handle (it is reopened on the next read)."""
        if self._slide is not None and self._pid == os.getpid():
            self._slide.close()
        self._slide = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_slide": None, "_pid": None}

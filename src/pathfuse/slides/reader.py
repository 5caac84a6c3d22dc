"""The OpenSlide reader: open a slide with clear errors, read tiles and regions.

:class:`SlideReader` is the first implementation of the reader seam
(:class:`pathfuse.slides.readers.base.SlideSource`, registry name ``openslide``) and the one
that reads every format OpenSlide knows. Tiling always uses it, so the tile grid never depends
on the reader setting; embedding uses it unless the JPEG-native reader applies. It opens the
file lazily and again after a fork, and pickles without its handle, so a DataLoader worker
gets its own OpenSlide object (OpenSlide handles are not shareable across processes).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import openslide
import tifffile
from PIL import Image

from pathfuse.slides.errors import SlideError
from pathfuse.slides.readers.base import (
    BACKGROUND,
    StoredResolution,
    level_for_downsample,
    positive_number,
    read_overview,
    reduction_factor,
)

__all__ = ["SlideReader", "level_for_downsample", "open_slide"]
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
    """Reads tiles and regions of one slide with OpenSlide; one instance per slide and worker.

    Example (embedding a tiles-parquet row)::

        reader = SlideReader(path)
        rgb = reader.read_tile(row.x, row.y, row.level, row.read_px, row.tile_px)  # HxWx3 uint8
    """

    name = "openslide"

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

    @property
    def vendor(self) -> str:
        """OpenSlide's ``openslide.vendor`` property ("" when absent)."""
        return str(self.slide.properties.get("openslide.vendor", ""))

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 (width, height) in pixels."""
        return tuple(self.slide.dimensions)  # type: ignore[return-value]

    @property
    def level_count(self) -> int:
        """How many pyramid levels OpenSlide sees."""
        return int(self.slide.level_count)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """(width, height) of every level, level 0 first."""
        return tuple(self.slide.level_dimensions)

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        """Each level's downsample factor relative to level 0."""
        return tuple(float(d) for d in self.slide.level_downsamples)

    @property
    def properties(self) -> Mapping[str, str]:
        """OpenSlide's properties of the file."""
        return self.slide.properties

    @property
    def resolution(self) -> StoredResolution:
        """OpenSlide's normalised ``openslide.mpp-x/y`` and ``openslide.objective-power``."""
        props = self.slide.properties
        return StoredResolution(positive_number(props, "openslide.mpp-x"), positive_number(props, "openslide.mpp-y"),
                                positive_number(props, "openslide.objective-power"))

    def read_tile(self, x: int, y: int, level: int, read_px: int, out_px: int) -> np.ndarray:
        """One tile as a writable uint8 array (out_px, out_px, 3).

        Args:
            x: level-0 left edge.
            y: level-0 top edge.
            level: pyramid level to read from.
            read_px: side of the square read at that level.
            out_px: output side. A larger read is first reduced by the power-of-two
                :func:`reduction_factor` (box filter, as the JPEG reader's DCT scaling), then
                resized bilinearly (antialiased) for any remaining difference.
        """
        read_px, out_px = int(read_px), int(out_px)  # rows of a DataFrame may come as floats
        region = self.read_rgba(x, y, level, read_px, read_px)
        if read_px == out_px and is_opaque(region):
            # The common case, kept to one packing pass: within a few % of a bare read_region.
            data = region.tobytes("raw", "RGB")
        else:
            image = to_rgb(region)
            factor = reduction_factor(read_px, out_px)
            if factor > 1:
                image = image.reduce(factor)
            if image.size != (out_px, out_px):
                image = image.resize((out_px, out_px), Image.Resampling.BILINEAR)
            data = image.tobytes()
        return np.frombuffer(bytearray(data), np.uint8).reshape(out_px, out_px, 3)

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

    def read_region(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        """A region as RGB uint8 on white background."""
        return np.asarray(to_rgb(self.read_rgba(x, y, level, width, height)))

    def overview(self, downsample: float) -> tuple[np.ndarray, tuple[float, float]]:
        """The whole slide downsampled by about ``downsample``: see :func:`read_overview`."""
        return read_overview(self, downsample)

    def close(self) -> None:
        """Release the OpenSlide handle (it is reopened on the next read)."""
        if self._slide is not None and self._pid == os.getpid():
            self._slide.close()
        self._slide = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_slide": None, "_pid": None}

"""Where a JPEG-tiled TIFF keeps its tiles: the facts the JPEG-native reader needs, from tifffile.

A file qualifies when it is a plain pyramidal TIFF or an Aperio SVS whose every pyramid level
is tiled, JPEG-compressed, 8-bit RGB or YCbCr, interleaved. Everything else (JPEG 2000 SVS,
strip TIFFs, NDPI, Philips, Leica SCN, Ventana BIF with its overlapping tiles, OME-TIFF, and
non-TIFF formats such as MIRAX or DICOM) stays with OpenSlide. Levels, downsamples and the
stated resolution follow OpenSlide's rules for these two formats (tested against OpenSlide),
so both readers describe a slide alike.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import tifffile

from pathfuse.slides.readers.base import StoredResolution, positive_number

JPEG = 7
PHOTOMETRIC_RGB, PHOTOMETRIC_YCBCR = 2, 6
#: Vendor TIFF dialects OpenSlide reads with its own rules (levels, overlaps, colour): not ours.
OTHER_DIALECTS = ("ndpi", "philips", "scn", "bif", "ome", "qpi")
#: ResolutionUnit → µm per unit (OpenSlide's generic-tiff rule; unit NONE states nothing).
UM_PER_UNIT = {2: 25_400.0, 3: 10_000.0}


class NotJpegTiled(ValueError):
    """The file is not one the JPEG-native reader handles; the message says why."""


@dataclass(frozen=True)
class JpegLevel:
    """One pyramid level: its size, tile size and where each tile's JPEG stream is."""

    width: int
    height: int
    tile_width: int
    tile_height: int
    offsets: np.ndarray = field(repr=False)  # int64, row-major tile order
    counts: np.ndarray = field(repr=False)  # int64; 0 = tile absent (background)
    tables: bytes = field(repr=False)  # JPEGTables (SOI, DQT/DHT, EOI), b"" when streams are complete
    rgb_encoded: bool  # PhotometricInterpretation RGB: components are R, G, B, not YCbCr

    @property
    def columns(self) -> int:
        """Tiles per row (the last one may be partial)."""
        return -(-self.width // self.tile_width)

    @property
    def rows(self) -> int:
        """Tile rows (the last one may be partial)."""
        return -(-self.height // self.tile_height)


@dataclass(frozen=True)
class JpegTiffLayout:
    """A qualifying file's vendor, levels (largest first), resolution and properties."""

    vendor: str
    levels: tuple[JpegLevel, ...]
    resolution: StoredResolution
    properties: dict[str, str]

    @property
    def downsamples(self) -> tuple[float, ...]:
        """OpenSlide's level downsample: the mean of the width and height ratios to level 0."""
        w0, h0 = self.levels[0].width, self.levels[0].height
        return tuple((w0 / lv.width + h0 / lv.height) / 2 for lv in self.levels)


def read_layout(path: str | os.PathLike[str]) -> JpegTiffLayout:
    """Parse ``path`` with tifffile.

    Raises:
        NotJpegTiled: the file is not a JPEG-tiled Aperio or generic TIFF (reason in the message).
    """
    try:
        with tifffile.TiffFile(path) as tif:
            return _layout(tif)
    except (tifffile.TiffFileError, OSError, ValueError, IndexError, KeyError) as err:
        if isinstance(err, NotJpegTiled):
            raise
        raise NotJpegTiled(f"not a TIFF tifffile can parse ({err})") from err


def _layout(tif: tifffile.TiffFile) -> JpegTiffLayout:
    first = tif.pages.first
    dialect = next((d for d in OTHER_DIALECTS if getattr(first, f"is_{d}", False) or getattr(tif, f"is_{d}", False)),
                   None)
    if dialect:
        raise NotJpegTiled(f"a {dialect} TIFF, whose layout OpenSlide interprets")
    if not first.is_tiled:
        raise NotJpegTiled("the first page is not tiled")
    pages = [page for page in tif.pages if isinstance(page, tifffile.TiffPage) and page.is_tiled]
    levels = sorted((_level(page, i) for i, page in enumerate(pages)), key=lambda lv: -lv.width)
    description = first.description or ""
    if description.startswith("Aperio"):
        fields = _aperio_fields(description)
        props = {f"aperio.{k}": v for k, v in fields.items()}
        mpp = positive_number(fields, "MPP")
        resolution = StoredResolution(mpp, mpp, positive_number(fields, "AppMag"))
        vendor = "aperio"
    else:
        props = {}
        resolution = StoredResolution(_tiff_mpp(first, "XResolution"), _tiff_mpp(first, "YResolution"), None)
        vendor = "generic-tiff"
    if description:
        props["tiff.ImageDescription"] = description
    return JpegTiffLayout(vendor, tuple(levels), resolution, props)


def _level(page: tifffile.TiffPage, index: int) -> JpegLevel:
    problem = (
        "not JPEG-compressed" if page.compression != JPEG else
        "not RGB/YCbCr" if page.photometric not in (PHOTOMETRIC_RGB, PHOTOMETRIC_YCBCR) else
        "not 8-bit, 3-sample, interleaved" if (page.bitspersample, page.samplesperpixel, page.planarconfig)
        != (8, 3, 1) else
        "volumetric tiles" if page.tiledepth != 1 else ""
    )
    if problem:
        raise NotJpegTiled(f"tiled page {index} is {problem}")
    return JpegLevel(
        width=int(page.imagewidth), height=int(page.imagelength),
        tile_width=int(page.tilewidth), tile_height=int(page.tilelength),
        offsets=np.asarray(page.dataoffsets, np.int64), counts=np.asarray(page.databytecounts, np.int64),
        tables=bytes(page.jpegtables or b""), rgb_encoded=page.photometric == PHOTOMETRIC_RGB,
    )


def _aperio_fields(description: str) -> dict[str, str]:
    """``key = value`` pairs of an Aperio ImageDescription (after the first ``|``)."""
    fields = {}
    for part in description.split("|")[1:]:
        key, sep, value = part.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def _tiff_mpp(page: tifffile.TiffPage, tag: str) -> float | None:
    """µm per pixel from X/YResolution and ResolutionUnit (None when unit or value is missing)."""
    unit = page.tags.get("ResolutionUnit")
    value = page.tags.get(tag)
    per_unit = UM_PER_UNIT.get(int(unit.value)) if unit is not None else UM_PER_UNIT[2]
    if value is None or per_unit is None:
        return None
    numerator, denominator = value.value
    return per_unit * denominator / numerator if numerator > 0 and denominator > 0 else None

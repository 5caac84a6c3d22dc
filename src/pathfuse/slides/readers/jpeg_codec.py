"""JPEG streams of TIFF tiles: make them self-contained, decode them at a DCT scale, assemble.

TIFF JPEG tiles are often *abbreviated* streams whose Huffman and quantisation tables live once
in the JPEGTables tag; :func:`complete_stream` splices them in. Aperio writes its tiles with
PhotometricInterpretation RGB, i.e. the components are R, G, B, but without the JFIF or Adobe
marker that would tell a decoder so; libjpeg then guesses YCbCr from the component ids and the
colours come out wrong. An Adobe APP14 marker with transform 0 states "RGB" explicitly, in a
way every libjpeg-based decoder honours (what OpenSlide achieves by setting the colour space).

Decoding uses libjpeg-turbo through Pillow's draft mode, which scales in the DCT domain by
1/2, 1/4 or 1/8: a 512-px read that becomes a 256-px tile never exists at full size.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, JpegImagePlugin

from pathfuse.slides.readers.base import BACKGROUND, RawRegion

_SOI, _EOI = b"\xff\xd8", b"\xff\xd9"
#: APP14 "Adobe", version 100, flags 0, 0, transform 0 (= components are RGB).
ADOBE_RGB = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"


def complete_stream(data: bytes, tables: bytes, rgb_encoded: bool) -> bytes:
    """A decodable JPEG stream from a tile's bytes, the level's JPEGTables and its colour coding."""
    if not data.startswith(_SOI):
        raise ValueError("tile data does not start with a JPEG SOI marker")
    header = _SOI
    if tables:
        if not (tables.startswith(_SOI) and tables.endswith(_EOI)):
            raise ValueError("JPEGTables is not an SOI … EOI table block")
        header += tables[2:-2]
    if rgb_encoded and b"JFIF" not in data[:32]:
        header += ADOBE_RGB
    return header + data[2:] if header != _SOI else data


def dct_scale(region: RawRegion, factor: int) -> int:
    """The DCT scale denominator to decode a region's tiles at: ``factor`` or the next power of two below.

    A DCT-scaled pixel averages a ``scale``² block aligned with the JPEG tile, so the read square
    must start and end on that block grid for the result to equal OpenSlide's read reduced by
    the same factor; an unaligned grid (rare) decodes at a smaller scale and reduces the rest.
    TIFF tile sides are multiples of 16, so tiles always decode to exactly 1/scale of their size.
    """
    scale = factor
    while scale > 1 and any(int(v) % scale for v in (*region.tile_size, *region.box)):
        scale //= 2
    return scale


def decode(stream: bytes, scale: int) -> np.ndarray:
    """Decode a complete JPEG stream at 1/``scale`` (libjpeg-turbo DCT scaling) to RGB uint8."""
    with JpegImagePlugin.JpegImageFile(io.BytesIO(stream)) as image:
        if scale > 1:
            image.draft("RGB", (image.width // scale, image.height // scale))
        if image.mode != "RGB":
            return np.asarray(image.convert("RGB"))
        return np.asarray(image)


def assemble(region: RawRegion, tile: Callable[[int, int], np.ndarray], factor: int) -> np.ndarray:
    """The read square of ``region`` as writable uint8 (out_px, out_px, 3).

    Args:
        region: which tiles and where (canvas pixels at full scale).
        tile: ``tile(i, scale)`` → the decoded ``streams[i]`` at 1/scale (never called for None).
        factor: the readers' common :func:`~pathfuse.slides.readers.base.reduction_factor`.

    Tiles are decoded at the :func:`dct_scale` and pasted; the read square is cropped, reduced
    by what of ``factor`` the DCT scaling did not do (box filter), and bilinear-resized only when
    it is still not ``out_px`` wide: the same steps as the OpenSlide reader after its full decode.
    """
    scale = dct_scale(region, factor)
    width, height = region.canvas[0] // scale, region.canvas[1] // scale
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = BACKGROUND
    for i, (stream, (ox, oy)) in enumerate(zip(region.streams, region.origins, strict=True)):
        if stream is None:
            continue
        pixels = tile(i, scale)
        x0, y0 = ox // scale, oy // scale
        h, w = min(pixels.shape[0], height - y0), min(pixels.shape[1], width - x0)
        canvas[y0:y0 + h, x0:x0 + w] = pixels[:h, :w]
    valid_w, valid_h = -(-region.valid[0] // scale), -(-region.valid[1] // scale)
    canvas[valid_h:] = BACKGROUND
    canvas[:, valid_w:] = BACKGROUND
    x0, y0, x1, y1 = (int(v) // scale for v in region.box)
    square = canvas[y0:y1, x0:x1]
    out = region.out_px
    if square.shape[:2] == (out, out):
        return square.copy()
    image = Image.fromarray(square)
    if factor > scale:
        image = image.reduce(factor // scale)
    if image.size != (out, out):
        image = image.resize((out, out), Image.Resampling.BILINEAR)
    return np.asarray(image).copy()

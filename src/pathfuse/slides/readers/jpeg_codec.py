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

    Tiles are decoded at the :func:`dct_scale` and their parts inside the read square pasted
    (areas outside the level or of absent tiles are background); the square is then reduced
    by what of ``factor`` the DCT scaling did not do (box filter), and bilinear-resized only when
    it is still not ``out_px`` wide: the same steps as the OpenSlide reader after its full decode.
    """
    scale = dct_scale(region, factor)
    x0, y0, x1, y1 = (v // scale for v in region.box)
    valid_w, valid_h = -(-region.valid[0] // scale), -(-region.valid[1] // scale)
    square = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
    if None in region.streams or x1 > valid_w or y1 > valid_h:
        square[:] = BACKGROUND
    tile_w, tile_h = region.tile_size[0] // scale, region.tile_size[1] // scale
    for i, (stream, (ox, oy)) in enumerate(zip(region.streams, region.origins, strict=True)):
        # the part of tile i inside both the read square and the level, in canvas pixels at 1/scale
        left, top = max(ox // scale, x0), max(oy // scale, y0)
        right, bottom = min(ox // scale + tile_w, x1, valid_w), min(oy // scale + tile_h, y1, valid_h)
        if stream is None or right <= left or bottom <= top:
            continue
        pixels = tile(i, scale)
        if pixels.shape[0] < tile_h or pixels.shape[1] < tile_w:  # a short edge tile: pad it with background
            padded = np.empty((tile_h, tile_w, 3), np.uint8)
            padded[:] = BACKGROUND
            padded[:pixels.shape[0], :pixels.shape[1]] = pixels[:tile_h, :tile_w]
            pixels = padded
        square[top - y0:bottom - y0, left - x0:right - x0] = (
            pixels[top - oy // scale:bottom - oy // scale, left - ox // scale:right - ox // scale])
    out = region.out_px
    if square.shape[:2] == (out, out):
        return square
    image = Image.fromarray(square)
    if factor > scale:
        image = image.reduce(factor // scale)
    if image.size != (out, out):
        image = image.resize((out, out), Image.Resampling.BILINEAR)
    return np.asarray(image).copy()

"""One QC picture per slide: thumbnail, tissue contour and the kept tiles, under a telling title.

Made to be judged in a second: kept tiles are a translucent green fill with darker green edges
(edges only when a tile is wide enough on the thumbnail to show them), the tissue contour is a
cyan line, and the title gives slide id, size, mpp and its source, target mpp, tile size and
count — and, in red, why a slide was skipped. Drawn with Pillow (tens of milliseconds per
slide) in matplotlib's bundled DejaVu Sans, which has µ, → and ².
"""

from __future__ import annotations

import math
import os
from functools import cache
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from pathfuse.io import atomic_path
from pathfuse.slides.tissue import TissueMask

TILE_FILL = np.array([0, 220, 0], np.float32)
TILE_ALPHA = 0.18
TILE_EDGE = np.array([0, 110, 0], np.uint8)
CONTOUR = np.array([0, 200, 255], np.uint8)
#: Draw tile edges only when a tile spans at least this many pixels of the picture.
MIN_EDGE_PX = 6
#: Tiny slides are enlarged (nearest neighbour) to at least this longest side.
MIN_SIDE_PX = 512


@cache
def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    return ImageFont.truetype(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", name), size)


def draw_qc(
    path: str | os.PathLike[str],
    thumbnail: np.ndarray,
    thumb_scale: tuple[float, float],
    tissue: TissueMask | None,
    tiles: pd.DataFrame,
    size0: float,
    title: str,
    details: str,
    problem: str = "",
) -> Path:
    """Write the QC PNG at ``path`` atomically.

    Args:
        path: destination ``.png``.
        thumbnail: RGB uint8 overview of the whole slide.
        thumb_scale: level-0 px per thumbnail px (x, y).
        tissue: the tissue mask (None when segmentation did not run).
        tiles: kept tiles (x, y level-0 top-left).
        size0: tile side in level-0 px.
        title: first line, in bold (the slide id).
        details: resolution and tile facts, wrapped to the picture's width.
        problem: why the slide was skipped; shown in red when given.
    """
    enlarge = max(1, math.ceil(MIN_SIDE_PX / max(thumbnail.shape[:2])))
    canvas = np.repeat(np.repeat(thumbnail, enlarge, axis=0), enlarge, axis=1).astype(np.float32)
    scale = (thumb_scale[0] / enlarge, thumb_scale[1] / enlarge)
    _paint_tiles(canvas, scale, tiles, size0)
    picture = canvas.round().astype(np.uint8)
    if tissue is not None and tissue.mask.any():
        picture[_contour(tissue.mask, picture.shape[:2])] = CONTOUR
    image = _with_header(Image.fromarray(picture), title, details, problem)
    path = Path(path)
    with atomic_path(path, suffix=".tmp.png") as tmp:
        image.save(tmp, format="PNG", compress_level=1)  # fast; QC files stay small
    return path


def _paint_tiles(canvas: np.ndarray, scale: tuple[float, float], tiles: pd.DataFrame, size0: float) -> None:
    """Tint kept tiles green in place; outline each when it is large enough to see.

    Rectangles are rasterised with difference arrays and cumulative sums, so a slide with
    tens of thousands of tiles costs a few array passes, not a Python loop per tile.
    """
    if tiles.empty:
        return
    height, width = canvas.shape[:2]
    x, y = tiles["x"].to_numpy(), tiles["y"].to_numpy()
    # Rounded corners: a tile's right edge is its right neighbour's left edge (one shared line).
    x0 = np.clip(np.round(x / scale[0]).astype(np.int64), 0, width - 1)
    y0 = np.clip(np.round(y / scale[1]).astype(np.int64), 0, height - 1)
    x1 = np.clip(np.round((x + size0) / scale[0]).astype(np.int64), x0 + 1, width)
    y1 = np.clip(np.round((y + size0) / scale[1]).astype(np.int64), y0 + 1, height)
    covered = np.zeros((height + 1, width + 1), np.int32)
    for rows, cols, sign in ((y0, x0, 1), (y0, x1, -1), (y1, x0, -1), (y1, x1, 1)):
        np.add.at(covered, (rows, cols), sign)
    covered = covered.cumsum(0).cumsum(1)[:height, :width] > 0
    canvas[covered] = canvas[covered] * (1 - TILE_ALPHA) + TILE_FILL * TILE_ALPHA
    if size0 / max(scale) >= MIN_EDGE_PX:
        rows_diff = np.zeros((height, width + 1), np.int32)  # top and bottom edges, spans along x
        right, bottom = np.minimum(x1, width - 1), np.minimum(y1, height - 1)
        for row in (y0, bottom):
            np.add.at(rows_diff, (row, x0), 1)
            np.add.at(rows_diff, (row, right + 1), -1)
        cols_diff = np.zeros((height + 1, width), np.int32)  # left and right edges, spans along y
        for col in (x0, right):
            np.add.at(cols_diff, (y0, col), 1)
            np.add.at(cols_diff, (bottom + 1, col), -1)
        edges = (rows_diff.cumsum(1)[:, :width] > 0) | (cols_diff.cumsum(0)[:height] > 0)
        canvas[edges] = TILE_EDGE


def _contour(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A 2-px line along the mask's border, at picture size (smoothed by bilinear upsampling)."""
    height, width = shape
    smooth = Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height), Image.Resampling.BILINEAR)
    inside = np.asarray(smooth) >= 128
    edge = np.zeros_like(inside)
    for shift in (1, 2):  # pixels inside with an outside pixel 1 or 2 px away
        edge[shift:] |= inside[shift:] & ~inside[:-shift]
        edge[:-shift] |= inside[:-shift] & ~inside[shift:]
        edge[:, shift:] |= inside[:, shift:] & ~inside[:, :-shift]
        edge[:, :-shift] |= inside[:, :-shift] & ~inside[:, shift:]
    return edge


def _with_header(picture: Image.Image, title: str, details: str, problem: str) -> Image.Image:
    """The picture under a white header with the title lines (wrapped to its width)."""
    width = picture.width
    size = max(11, min(20, width // 55))
    pad = size // 2
    lines = [(title, _font(size + 2, bold=True), (0, 0, 0))]
    lines += [(t, _font(size), (40, 40, 40)) for t in _wrap(details, _font(size), width - 2 * pad)]
    lines += [(t, _font(size, bold=True), (200, 0, 0)) for t in _wrap(f"SKIPPED: {problem}" if problem else "",
                                                                       _font(size, bold=True), width - 2 * pad)]
    line_h = int(size * 1.35)
    header = pad * 2 + line_h * len(lines)
    out = Image.new("RGB", (width, picture.height + header), (255, 255, 255))
    out.paste(picture, (0, header))
    draw = ImageDraw.Draw(out)
    for i, (text, font, colour) in enumerate(lines):
        draw.text((pad, pad + i * line_h), text, font=font, fill=colour)
    return out


def _wrap(text: str, font: ImageFont.FreeTypeFont, width: int) -> list[str]:
    """Greedy word wrap to ``width`` pixels."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines

"""The JPEG-native reader: tile reads straight from the JPEG tiles of a TIFF (registry name ``jpeg``).

For a qualifying file (:mod:`.tiff_layout`) a tile read fetches the compressed tiles the square
covers with one ``pread`` each, decodes each at the largest DCT scale that still reaches the
output size, and crops. OpenSlide decodes every covered tile at full size and the caller then
shrinks the result: for the common 40x slide read at 0.5 µm/px that is 4x the pixels decoded
and a resize on top. Pixels match OpenSlide's bit for bit at scale 1 (same libjpeg, same colour
rule) and within the resampling difference otherwise (tests/slides/test_readers_equivalence.py).

Per instance (i.e. per worker process) the reader keeps its file descriptor, the parsed layout
(offsets and JPEG tables) and a small LRU cache of decoded tiles, because neighbouring tile
reads share JPEG tiles whenever the grid is not aligned with them (e.g. Aperio's 240-px tiles).
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pathfuse.slides.errors import SlideError
from pathfuse.slides.readers.base import RawRegion, StoredResolution, reduction_factor
from pathfuse.slides.readers.jpeg_codec import assemble, complete_stream, decode
from pathfuse.slides.readers.tiff_layout import JpegLevel, JpegTiffLayout, NotJpegTiled, read_layout

#: Decoded tiles kept per reader; 64 MB holds a row of a 40x slide's 256-px tiles at scale 1/2.
CACHE_BYTES = 64 * 2**20
DECODE_ERRORS = (OSError, SyntaxError, ValueError)


class JpegTiffReader:
    """Reads tiles of a JPEG-tiled Aperio or generic TIFF without OpenSlide."""

    name = "jpeg"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._layout: JpegTiffLayout | None = None
        self._fd: int | None = None
        self._pid: int | None = None
        self._cache: OrderedDict[tuple[int, int, int, int], np.ndarray] = OrderedDict()
        self._cache_bytes = 0

    @property
    def layout(self) -> JpegTiffLayout:
        """The parsed file (raises :class:`SlideError` when the file does not qualify)."""
        if self._layout is None:
            if not self.path.is_file():
                raise SlideError("missing_file", f"{self.path}: no such file. Fix the cohort's glob or manifest path")
            try:
                self._layout = read_layout(self.path)
            except NotJpegTiled as err:
                raise SlideError("unsupported_format", f"{self.path}: the jpeg reader cannot read it ({err}); "
                                 "use embedding.reader: auto or openslide") from err
        return self._layout

    @property
    def vendor(self) -> str:
        """The vendor the TIFF layout was recognised as."""
        return self.layout.vendor

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 (width, height) in pixels."""
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        """How many pyramid levels the TIFF holds."""
        return len(self.layout.levels)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """(width, height) of every level, level 0 first."""
        return tuple((lv.width, lv.height) for lv in self.layout.levels)

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        """Each level's downsample factor relative to level 0."""
        return self.layout.downsamples

    @property
    def resolution(self) -> StoredResolution:
        """The resolution the TIFF tags and description state."""
        return self.layout.resolution

    @property
    def properties(self) -> Mapping[str, str]:
        """The TIFF's metadata as text key/value pairs."""
        return self.layout.properties

    def read_tile(self, x: int, y: int, level: int, read_px: int, out_px: int) -> np.ndarray:
        """One tile as writable uint8 (out_px, out_px, 3), decoded at the largest fitting DCT scale."""
        region = self.raw_region(x, y, level, read_px, out_px)
        return assemble(region, lambda i, s: self._decoded(region, i, s), reduction_factor(int(read_px), int(out_px)))

    def read_region(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        """A region at ``level`` as uint8 (height, width, 3), full-scale decode, white background."""
        side = max(int(width), int(height))
        square = self.read_tile(x, y, level, side, side)
        return square[: int(height), : int(width)]

    def raw_region(self, x: int, y: int, level: int, read_px: int, out_px: int) -> RawRegion:
        """The complete JPEG streams of the tiles under a read square (for GPU or CPU decoding)."""
        lv = self._level(level)
        ds = self.layout.downsamples[level]
        lx, ly = math.floor(int(x) / ds + 1e-9), math.floor(int(y) / ds + 1e-9)
        read_px = int(read_px)
        tw, th = lv.tile_width, lv.tile_height
        cols = range(lx // tw, (lx + read_px - 1) // tw + 1)
        rows = range(ly // th, (ly + read_px - 1) // th + 1)
        streams, keys, origins = [], [], []
        for row in rows:
            for col in cols:
                streams.append(self._stream(level, col, row))
                keys.append((level, col, row))
                origins.append(((col - cols.start) * tw, (row - rows.start) * th))
        left, top = cols.start * tw, rows.start * th
        return RawRegion(
            streams=tuple(streams), keys=tuple(keys), origins=tuple(origins), tile_size=(tw, th),
            canvas=(len(cols) * tw, len(rows) * th),
            valid=(max(0, lv.width - left), max(0, lv.height - top)),
            box=(lx - left, ly - top, lx - left + read_px, ly - top + read_px), out_px=int(out_px),
            rgb_encoded=lv.rgb_encoded,
        )

    def _level(self, level: int) -> JpegLevel:
        levels = self.layout.levels
        if not 0 <= int(level) < len(levels):
            raise SlideError("unreadable", f"{self.path}: level {level} does not exist ({len(levels)} levels)")
        return levels[int(level)]

    def _stream(self, level: int, col: int, row: int) -> bytes | None:
        """One tile's complete JPEG stream; None outside the level or for an absent (sparse) tile."""
        lv = self.layout.levels[level]
        if not (0 <= col < lv.columns and 0 <= row < lv.rows):
            return None
        index = row * lv.columns + col
        count, offset = int(lv.counts[index]), int(lv.offsets[index])
        if count == 0 or offset == 0:
            return None
        data = os.pread(self._file(), count, offset)
        try:
            if len(data) != count:
                raise ValueError(f"file ends {count - len(data)} bytes early")
            return complete_stream(data, lv.tables, lv.rgb_encoded)
        except ValueError as err:
            raise self._damaged(level, col, row, err) from err

    def _decoded(self, region: RawRegion, i: int, scale: int) -> np.ndarray:
        """``region.streams[i]`` decoded at 1/scale, through the per-reader LRU cache."""
        key = (*region.keys[i], scale)
        pixels = self._cache.get(key)
        if pixels is not None:
            self._cache.move_to_end(key)
            return pixels
        stream = region.streams[i]
        assert stream is not None
        try:
            pixels = decode(stream, scale)
        except DECODE_ERRORS as err:
            raise self._damaged(region.keys[i][0], region.keys[i][1], region.keys[i][2], err) from err
        self._cache[key] = pixels
        self._cache_bytes += pixels.nbytes
        while self._cache_bytes > CACHE_BYTES and len(self._cache) > 1:
            self._cache_bytes -= self._cache.popitem(last=False)[1].nbytes
        return pixels

    def _damaged(self, level: int, col: int, row: int, err: Exception) -> SlideError:
        return SlideError("unreadable", f"{self.path}: JPEG tile (column {col}, row {row}) of level {level} cannot "
                          f"be decoded ({err}); the file is probably damaged: copy or export it again, or remove it")

    def _file(self) -> int:
        """The file descriptor, opened on first use and again in a forked child."""
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self.path, os.O_RDONLY)
            self._pid = os.getpid()
        return self._fd

    def close(self) -> None:
        """Release the file and the decoded-tile cache (both are rebuilt on the next read)."""
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None
        self._cache.clear()
        self._cache_bytes = 0

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fd": None, "_pid": None, "_cache": OrderedDict(), "_cache_bytes": 0}

"""The tiles of a shard's slides as one Dataset, read straight from the slide files.

Every tile of every pending slide of a shard is one item, in slide order, so one DataLoader
(and one set of worker processes) serves the whole shard without draining between slides.
Each slide is read by the reader ``embedding.reader`` (or ``cohorts.<name>.reader``) picks for
it — the JPEG-native reader where the file qualifies under ``auto``, OpenSlide otherwise — and
each feature file records which. Each worker opens its own slide handles lazily (OpenSlide
handles are not fork-safe) and keeps the few it is using. A tile that fails to read (e.g. a
corrupt JPEG block) is logged and either zero-filled or flagged for dropping, or stops the job,
per ``embedding.on_tile_error``. With ``raw = True`` (set by :mod:`.gpu_decode`) items of
JPEG-native slides are the tiles' compressed streams, decoded later on the GPU.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from pathfuse.config import Config
from pathfuse.encoders.transforms import ResizeCrop
from pathfuse.slides.readers import choose_reader, reader_class
from pathfuse.slides.readers.base import RawRegion, RawTileSource

log = logging.getLogger(__name__)

TILE_COLUMNS = ("x", "y", "level", "read_px", "tile_px")
_OPEN_READERS = 2  # items arrive in slide order: the current slide and the next one suffice
#: SlideReader error causes that concern the whole file (moved or replaced since tiling), not a tile.
_WHOLE_SLIDE_CAUSES = ("missing_file", "unsupported_format")


class TileReadError(RuntimeError):
    """A tile could not be read and ``on_tile_error`` is ``fail``."""


class MixedReadersError(RuntimeError):
    """A cohort's existing feature files were made under another reader setting."""


def reader_setting(cfg: Config, cohort: str) -> str:
    """The reader setting of ``cohort``: ``cohorts.<name>.reader``, else ``embedding.reader``."""
    entry = cfg.settings.cohorts.get(cohort)
    own = entry.reader if entry else None
    return str(own or cfg.settings.embedding.reader)


def check_reader_mixing(feature_files: Iterable[Path], setting: str, allow: bool) -> None:
    """Refuse to add features to a cohort whose existing files were read under another setting.

    Features of one cohort should come from one way of reading pixels, or the experts learn
    decoder differences. Files from before readers were recorded count as ``openslide``.

    Raises:
        MixedReadersError: naming the files, the settings and the two ways out.
    """
    from safetensors import SafetensorError, safe_open

    others: dict[str, list[str]] = {}
    for path in feature_files:
        try:
            with safe_open(str(path), framework="np") as fh:
                made_with = (fh.metadata() or {}).get("reader_setting", "openslide")
        except (SafetensorError, OSError):
            continue  # unreadable files are re-made by the resume logic
        if made_with != setting:
            others.setdefault(made_with, []).append(Path(path).name)
    if others and not allow:
        found = "; ".join(f"{k}: {len(v)} file(s), e.g. {v[0]}" for k, v in sorted(others.items()))
        raise MixedReadersError(
            f"embedding.reader is {setting!r} but this cohort already has features read under another "
            f"setting ({found}). Delete those feature files to re-embed them, or set "
            "embedding.allow_mixed_readers: true to keep them"
        )


class ShardTiles(Dataset):
    """Items ``(uint8 image [3, S, S], flat tile index, read ok)`` over several slides."""

    def __init__(
        self,
        slide_ids: Sequence[str],
        slide_paths: Sequence[str],
        tiles: Sequence[pd.DataFrame],
        geometry: ResizeCrop,
        on_error: str,
        reader: str = "auto",
    ) -> None:
        if not len(slide_ids) == len(slide_paths) == len(tiles):
            raise ValueError("slide_ids, slide_paths and tiles must have one entry per slide")
        self.slide_ids = list(slide_ids)
        self.slide_paths = [str(p) for p in slide_paths]
        self.reader_setting = reader
        self.reader_names = [choose_reader(p, reader) for p in self.slide_paths]
        counts = np.array([len(t) for t in tiles], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(counts)])
        self.slide_of = np.repeat(np.arange(len(tiles)), counts)
        columns = {c: np.concatenate([t[c].to_numpy(np.int64) for t in tiles]) if len(tiles) else
                   np.zeros(0, np.int64) for c in TILE_COLUMNS}
        self.coords = np.stack([columns["x"], columns["y"]], axis=1)
        self.levels, self.read_px, self.tile_px = columns["level"], columns["read_px"], columns["tile_px"]
        self.geometry = geometry
        self.on_error = on_error
        self.raw = False
        self._readers: OrderedDict[int, Any] = OrderedDict()

    def __len__(self) -> int:
        return len(self.slide_of)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | RawRegion, int, bool]:
        slide = int(self.slide_of[index])
        x, y = (int(v) for v in self.coords[index])
        tile_px = int(self.tile_px[index])
        try:
            reader = self._reader(slide)
            read = (int(self.levels[index]), int(self.read_px[index]), tile_px)
            if self.raw and isinstance(reader, RawTileSource):
                region = reader.raw_region(x, y, *read)
                if region is not None:
                    return region, index, True
            image = reader.read_tile(x, y, *read)
            ok = True
        except Exception as err:  # OpenSlideError, OSError, decoder errors: the cause is in the message
            where = (f"slide {self.slide_ids[slide]} ({self.slide_paths[slide]}): tile x={x} y={y} "
                     f"level={int(self.levels[index])} could not be read: {err}")
            if getattr(err, "cause", None) in _WHOLE_SLIDE_CAUSES:
                raise TileReadError(f"slide {self.slide_ids[slide]}: {err}") from err
            if self.on_error == "fail":
                raise TileReadError(f"{where}; set embedding.on_tile_error to drop or zero to go on") from err
            log.warning("%s; %s", where, "dropped" if self.on_error == "drop" else "zero-filled")
            self._close(slide)  # an OpenSlide handle is unusable after an error: reopen it next time
            image = np.zeros((tile_px, tile_px, 3), dtype=np.uint8)
            ok = False
        return self.geometry(image), index, ok

    def _reader(self, slide: int) -> Any:
        reader = self._readers.get(slide)
        if reader is None:
            while len(self._readers) >= _OPEN_READERS:
                self._close(next(iter(self._readers)))
            reader = self._readers[slide] = reader_class(self.reader_names[slide])(self.slide_paths[slide])
        return reader

    def _close(self, slide: int) -> None:
        reader = self._readers.pop(slide, None)
        close = getattr(reader, "close", None)
        if close is not None:
            close()

    def close(self) -> None:
        """Close the handles this process opened (only the main process has any with 0 workers)."""
        for slide in list(self._readers):
            self._close(slide)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_readers"] = OrderedDict()  # handles never travel to worker processes
        return state


"""The ``tiling`` section (sections/tiling.schema.yaml documents each key)."""

from __future__ import annotations

from typing import Any, Literal

from pathfuse.settings.base import Number, Settings

#: Settings that do not change a slide's tiles: how errors are handled, the QC picture's size and
#: how slides are grouped into jobs.
_NOT_IN_GRID_KEY = ("shard_size", "on_slide_error", "qc_px")


class TilingSettings(Settings):
    """Stage 1a settings: whole-slide images → tile grids.

    :meth:`grid_key` is stored in every tiles file, so a re-run reuses a slide's tiles only
    when they were made with the same settings.
    """

    target_mpp: Number
    tile_px: int
    stride_px: int | None
    min_tissue: Number
    max_tiles_per_slide: int | None
    shard_size: int
    on_slide_error: Literal["fail", "skip"]
    allow_objective_power: bool
    mpp_range: tuple[float, float]
    seg_mpp: Number
    threshold: Literal["otsu"] | Number
    min_saturation: Number
    median_px: int
    closing_um: Number
    min_object_mm2: Number
    max_hole_mm2: Number
    qc_px: int

    @property
    def stride(self) -> int:
        """Grid step in output pixels (``stride_px``, or ``tile_px`` for no overlap)."""
        return int(self.stride_px or self.tile_px)

    def grid_key(self) -> dict[str, Any]:
        """Every setting that changes a slide's tiles, in schema order."""
        key = self.model_dump(exclude=set(_NOT_IN_GRID_KEY))
        key["mpp_range"] = list(self.mpp_range)
        key["stride_px"] = self.stride
        return key

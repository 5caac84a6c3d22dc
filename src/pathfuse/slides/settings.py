"""The tiling section of the run config as one typed, hashable value."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class TilingSettings:
    """Tiling settings (src/pathfuse/resources/schemas/sections/tiling.schema.yaml documents each).

    :meth:`grid_key` is stored in every tiles file, so a re-run reuses a slide's tiles only
    when they were made with the same settings.
    """

    target_mpp: float = 0.5
    tile_px: int = 256
    stride_px: int | None = None
    min_tissue: float = 0.5
    max_tiles_per_slide: int | None = None
    on_slide_error: str = "fail"
    allow_objective_power: bool = False
    mpp_range: tuple[float, float] = (0.1, 2.0)
    seg_mpp: float = 8.0
    threshold: str | float = "otsu"
    min_saturation: float = 15.0
    median_px: int = 5
    closing_um: float = 16.0
    min_object_mm2: float = 0.01
    max_hole_mm2: float = 0.01
    qc_px: int = 1024

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> TilingSettings:
        """Build from ``cfg.section("tiling")``; keys the stage does not use are ignored."""
        known = {k: v for k, v in section.items() if k in cls.__dataclass_fields__}
        if "mpp_range" in known:
            known["mpp_range"] = tuple(float(v) for v in known["mpp_range"])
        return cls(**known)

    @property
    def stride(self) -> int:
        """Grid step in output pixels (``stride_px``, or ``tile_px`` for no overlap)."""
        return int(self.stride_px or self.tile_px)

    def grid_key(self) -> dict[str, Any]:
        """Every setting that changes a slide's tiles (not the error policy or QC size)."""
        key = asdict(self)
        for name in ("on_slide_error", "qc_px"):
            key.pop(name)
        key["mpp_range"] = list(self.mpp_range)
        key["stride_px"] = self.stride
        return key

"""The ``demo`` section: the synthetic demo cohort (sections/demo.schema.yaml documents each key)."""

from __future__ import annotations

from pathfuse.settings.base import Number, Settings


class DemoExternalSettings(Settings):
    """The demo's external cohort: new cases from another "scanner" (stain and resolution shifted)."""

    n_cases: int
    hue_shift: Number
    eosin_shift: Number
    mpp: Number


class DemoSettings(Settings):
    """Size and look of the generated demo cohort; used only when ``enabled``."""

    enabled: bool
    out_dir: str
    n_cases: int
    two_slide_fraction: Number
    slide_width_px: int
    slide_height_px: int
    mpp: Number
    external: DemoExternalSettings
    aperio_fraction: Number
    jpeg_quality: int
    tile_images_per_class: int
    label_noise: Number
    workers: int

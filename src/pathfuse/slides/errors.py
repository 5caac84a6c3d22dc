"""Errors of the tiling stage, each with a short machine-readable cause.

A bad slide is an expected event in real cohorts, so each error carries a ``cause`` code
(recorded in the shard manifest and ``_skipped.parquet``) besides a message for people. With
``tiling.on_slide_error: skip`` a :class:`SlideError` becomes a skipped row; with ``fail`` it
stops the job. :class:`CohortError` is a problem of the slide list as a whole.
"""

from __future__ import annotations

#: Cause codes, in the order a slide meets them. Reports count dropped slides per cause.
CAUSES: dict[str, str] = {
    "unsafe_id": "slide id is not a safe file name",
    "duplicate_id": "two slide files share one slide id",
    "missing_file": "slide file does not exist",
    "unsupported_format": "not a format OpenSlide reads",
    "unreadable": "OpenSlide could not open or read the file",
    "no_mpp": "no resolution (µm/px) known",
    "implausible_mpp": "resolution outside the plausible range",
    "mpp_too_coarse": "slide resolution coarser than the target",
    "no_tissue": "no tissue found",
    "no_tiles": "no tile reaches the minimum tissue fraction",
    "missing_slide": "listed in a label table but not in the cohort",
    "unlabeled": "in the cohort but in no label table",
}


class SlideError(RuntimeError):
    """One slide cannot be tiled; the message names the file, the cause and the fix."""

    def __init__(self, cause: str, message: str) -> None:
        if cause not in CAUSES:
            raise ValueError(f"unknown slide error cause {cause!r}; known: {sorted(CAUSES)}")
        super().__init__(message)
        self.cause = cause


class CohortError(ValueError):
    """The cohort's slide list is unusable (bad manifest, unsafe or duplicate ids, no slides)."""

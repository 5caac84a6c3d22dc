"""Where a cohort's bring-your-own slide-feature bags are, read from the typed settings alone.

Two places need the folders: :mod:`pathfuse.config` counts a features-only cohort's slides
(its shard count) and :mod:`pathfuse.encoders.sources` checks and imports the bags. Both read
them here, from :class:`~pathfuse.settings.RunSettings` rather than the Config, so neither of
them imports the other. Light on purpose (no torch, no encoders package): config imports it.

A folder is configured either directly (``embedding.byo.slides.<encoder>.<cohort>: <folder>``)
or as a TRIDENT job tree (``cohorts.<cohort>.trident``, read from ``<root>/features_<model>/``).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path

from pathfuse.settings import RunSettings

BAG_SUFFIXES = (".h5", ".hdf5")


def slide_source(settings: RunSettings, encoder: str, cohort: str) -> Path | None:
    """The HDF5 bag folder of (encoder, cohort), or None (then stage 1 computes the features)."""
    folder = settings.embedding.byo.slides.get(encoder, {}).get(cohort)
    if folder:
        return Path(folder)
    entry = settings.cohorts.get(cohort)
    trident = entry.trident if entry else None
    if trident and encoder in trident.models:
        return Path(trident.root) / f"features_{trident.models[encoder]}"
    return None


@cache
def _bag_files(folder: str) -> dict[str, Path]:
    path = Path(folder)
    if not path.is_dir():
        return {}
    return {p.stem: p for p in sorted(path.iterdir()) if p.suffix in BAG_SUFFIXES and p.is_file()}


def bag_files(folder: Path) -> dict[str, Path]:
    """Slide id → bag file of a folder (sorted by id; cached per process; empty if it is no folder)."""
    return dict(_bag_files(str(folder)))


def shared_slide_ids(settings: RunSettings, cohort: str, encoders: Sequence[str]) -> set[str]:
    """Slide ids of ``cohort`` with a bag for every one of ``encoders``.

    Empty without encoders, or when an encoder has no folder, a missing one or no bags in it
    (:func:`pathfuse.encoders.sources.coverage` names those problems; this only counts).
    """
    found = [set(_bag_files(str(folder))) if (folder := slide_source(settings, e, cohort)) else set()
             for e in encoders]
    return set.intersection(*found) if found else set()

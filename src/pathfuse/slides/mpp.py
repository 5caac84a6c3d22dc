"""A slide's resolution (µm per level-0 pixel) and where it came from — never a silent guess.

Order: the per-slide override (override table, then the manifest's mpp column) → the mpp the
file states (as the slide reader reports it: :class:`~pathfuse.slides.readers.base.StoredResolution`)
→ the objective power (mpp ≈ 10 / power), only when the config allows it.
A missing mpp, or one outside the plausible range (a 72- or 96-dpi TIFF default gives
352.8 or 264.6 µm/px), stops the slide with an error naming the override table to fix it.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pandas as pd

from pathfuse.slides.errors import CohortError, SlideError
from pathfuse.slides.readers.base import StoredResolution

log = logging.getLogger(__name__)

#: mpp-x and mpp-y may differ by this relative amount (rounding in vendor metadata).
SQUARE_TOLERANCE = 0.02


def read_mpp_overrides(path: str | Path | None, cohort: str) -> dict[str, float]:
    """The override table ``slide_id,mpp`` as a dict ({} when no table is configured)."""
    if not path:
        return {}
    path = Path(path)
    where = f"cohort {cohort!r} mpp override table {path}"
    if not path.is_file():
        raise CohortError(f"{where}: file not found; fix cohorts.{cohort}.mpp_overrides in the config")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise CohortError(f"{where}: not a readable CSV ({err})") from err
    if not {"slide_id", "mpp"} <= set(table.columns):
        raise CohortError(f"{where}: needs columns slide_id,mpp; found {list(table.columns)}")
    ids = table["slide_id"].str.strip()
    values = pd.to_numeric(table["mpp"].str.strip(), errors="coerce")
    bad = [f"{s}={v!r}" for s, v, num in zip(ids, table["mpp"], values, strict=True) if not num > 0]
    if bad:
        raise CohortError(f"{where}: mpp must be a positive number (µm/px); bad: {', '.join(bad)}")
    dup = sorted(set(ids[ids.duplicated()]))
    if dup:
        raise CohortError(f"{where}: slide id(s) listed more than once: {dup}")
    return dict(zip(ids, values.astype(float), strict=True))


def resolve_mpp(
    stored: StoredResolution,
    *,
    source: str,
    override: float | None,
    allow_objective_power: bool,
    mpp_range: tuple[float, float],
    fix: str,
) -> tuple[float, str]:
    """Return (level-0 µm/px, source) with source override | ``source`` | objective_power.

    Args:
        stored: what the slide file states (mpp-x, mpp-y, objective power), from its reader.
        source: the name recorded when the file's own mpp is used (the reader's, e.g. openslide).
        override: the user's per-slide mpp (override table or manifest), or None.
        allow_objective_power: accept mpp = 10 / objective power when no mpp is stored.
        mpp_range: plausible (low, high) µm/px for a scanned slide.
        fix: how to give an override for this slide (named in every error).

    Raises:
        SlideError: no usable mpp (cause no_mpp, implausible_mpp or unreadable for
            non-square pixels).
    """
    low, high = mpp_range
    if override is not None and not math.isnan(override):
        if not low <= override <= high:
            log.warning("override mpp %.4g µm/px is outside %g–%g; using it as given", override, low, high)
        return float(override), "override"

    mpp_x, mpp_y, power = stored
    power_hint = (
        f" The file states objective power {power:g}x: set tiling.allow_objective_power: true to "
        f"use mpp ≈ 10/{power:g} = {10 / power:.3g}." if power and not allow_objective_power else ""
    )
    stated = [v for v in (mpp_x, mpp_y) if v is not None]
    if stated:
        if max(stated) > min(stated) * (1 + SQUARE_TOLERANCE):
            raise SlideError(
                "implausible_mpp",
                f"non-square pixels (mpp-x {mpp_x}, mpp-y {mpp_y} µm/px) are not supported. {fix}.",
            )
        mpp = sum(stated) / len(stated)
        if low <= mpp <= high:
            return mpp, source
        if not (allow_objective_power and power):
            raise SlideError(
                "implausible_mpp",
                f"the file's mpp {mpp:.4g} µm/px is outside the plausible {low:g}–{high:g} "
                f"(a 72-dpi TIFF default gives 352.8, 96 dpi gives 264.6): it is not the scan "
                f"resolution. {fix}.{power_hint}",
            )
        log.warning("mpp %.4g µm/px is implausible; using the objective power %gx instead", mpp, power)

    if allow_objective_power and power:
        mpp = 10.0 / power
        if not low <= mpp <= high:
            raise SlideError(
                "implausible_mpp",
                f"objective power {power:g}x gives mpp {mpp:.3g}, outside {low:g}–{high:g}. {fix}.",
            )
        return mpp, "objective_power"
    raise SlideError("no_mpp", f"the file states no resolution (no mpp). {fix}.{power_hint}")


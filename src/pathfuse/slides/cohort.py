"""Which slides a cohort has: slide ids, files and per-slide mpp, checked, sorted and sharded.

A cohort is a glob of slide files (slide id = file stem) or a manifest CSV
``slide_id,path[,mpp]``. Slide ids become file names of every later stage, so they must be
safe file names and unique — also ignoring case, because two ids that differ only in case
overwrite each other's outputs on case-insensitive file systems (macOS, Windows).
"""

from __future__ import annotations

import glob
import re
from pathlib import Path

import numpy as np
import pandas as pd

from pathfuse.config import CohortSpec
from pathfuse.slides.errors import CohortError

#: A slide id must start with a letter or digit and use only letters, digits, '.', '_', '-'.
#: That keeps ids valid as file names everywhere and apart from pathfuse's own ``_index`` files.
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
COLUMNS = ["slide_id", "path", "mpp"]


def list_slides(spec: CohortSpec) -> pd.DataFrame:
    """The cohort's slides as columns slide_id, path, mpp (NaN if not given), sorted by id.

    Raises:
        CohortError: the manifest is malformed, or some slide ids are unsafe or duplicated
            (the message names them and the fix).
    """
    slides, rejected = scan_slides(spec)
    if len(rejected):
        raise CohortError(describe_rejected(spec, rejected))
    return slides


def scan_slides(spec: CohortSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split the cohort's listing into usable slides and rejected ones (unsafe/duplicate ids).

    ``tiling.on_slide_error: skip`` needs the rejected entries as data (to record them)
    rather than as an exception, which is why this is separate from :func:`list_slides`.

    Returns:
        (slides, rejected): slides as in :func:`list_slides`; rejected with columns
        slide_id, path, cause (unsafe_id | duplicate_id), reason. Every copy of a duplicated
        id is rejected: which file is the right one cannot be known.
    """
    listing = _read_listing(spec)
    unsafe = np.array([not SAFE_ID.match(s) for s in listing["slide_id"]], dtype=bool)
    folded = listing["slide_id"].astype(str).str.lower()
    duplicate = folded.duplicated(keep=False).to_numpy(dtype=bool) & ~unsafe
    rejected = pd.concat([
        listing[unsafe].assign(
            cause="unsafe_id",
            reason=lambda d: "slide id " + d["slide_id"].map(repr) + " is not a safe file name "
            "(letters, digits, '.', '_', '-'; first a letter or digit)",
        ),
        listing[duplicate].assign(
            cause="duplicate_id",
            reason=lambda d: d["slide_id"].map(
                lambda s: f"slide id {s!r} is given to {int((folded == s.lower()).sum())} files "
                "(ids must be unique, ignoring case)"
            ),
        ),
    ])
    slides = listing[~unsafe & ~duplicate].sort_values("slide_id", kind="stable")
    rejected = rejected.sort_values(["slide_id", "path"], kind="stable")
    return (
        slides.reset_index(drop=True)[COLUMNS],
        rejected.reset_index(drop=True)[["slide_id", "path", "cause", "reason"]],
    )


def describe_rejected(spec: CohortSpec, rejected: pd.DataFrame) -> str:
    """One error message for all unsafe and duplicate ids of a cohort, with the fix."""
    source = f"manifest {spec.manifest}" if spec.manifest else f"glob {spec.slides!r}"
    lines = [f"  - {row.slide_id!r} ({row.path}): {row.reason}" for row in rejected.itertuples()]
    return (
        f"cohort {spec.name!r} ({source}) has unusable slide ids:\n" + "\n".join(lines) + "\n"
        "Fix: rename the files, or list the slides in a manifest CSV (slide_id,path[,mpp]) with "
        "safe, unique ids; or set tiling.on_slide_error: skip to record and leave them out."
    )


def shard_slides(slides: pd.DataFrame, shard: int, n_shards: int) -> pd.DataFrame:
    """The ``shard``-th of ``n_shards`` contiguous chunks of the (sorted) slide table.

    Contiguous chunks of the sorted list (``numpy.array_split``) give every stage the same
    partition from the same list, without storing it.
    """
    if n_shards < 1 or not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} does not exist: the cohort has {n_shards} shard(s)")
    rows = np.array_split(np.arange(len(slides)), n_shards)[shard]
    return slides.iloc[rows].reset_index(drop=True)


def _read_listing(spec: CohortSpec) -> pd.DataFrame:
    if spec.manifest:
        return _read_manifest(Path(spec.manifest), spec.name)
    if not spec.slides:
        raise CohortError(f"cohort {spec.name!r}: give 'slides' (a glob) or 'manifest' (a CSV)")
    # Only files: a MIRAX slide's data folder shares the stem of its .mrxs file.
    paths = sorted(p for p in glob.glob(spec.slides, recursive=True) if Path(p).is_file())
    return pd.DataFrame({
        "slide_id": pd.Series([Path(p).stem for p in paths], dtype=object),
        "path": pd.Series(paths, dtype=object),
        "mpp": np.full(len(paths), np.nan),
    })


def _read_manifest(path: Path, cohort: str) -> pd.DataFrame:
    """Read ``slide_id,path[,mpp]``; relative paths are relative to the manifest's folder."""
    where = f"cohort {cohort!r} manifest {path}"
    if not path.is_file():
        raise CohortError(f"{where}: file not found; fix cohorts.{cohort}.manifest in the config")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise CohortError(f"{where}: not a readable CSV ({err})") from err
    missing = {"slide_id", "path"} - set(table.columns)
    if missing:
        raise CohortError(
            f"{where}: missing column(s) {sorted(missing)}; found {list(table.columns)} "
            "(expected slide_id,path[,mpp])"
        )
    table["slide_id"] = table["slide_id"].str.strip()
    table["path"] = table["path"].str.strip()
    empty = table.index[(table["slide_id"] == "") | (table["path"] == "")]
    if len(empty):
        raise CohortError(f"{where}: empty slide_id or path on data line(s) {[i + 1 for i in empty]}")
    mpp_text = table["mpp"].str.strip() if "mpp" in table else pd.Series("", index=table.index)
    mpp = pd.to_numeric(mpp_text.where(mpp_text != ""), errors="coerce")
    bad = table.index[(mpp_text != "") & ~(mpp > 0)]
    if len(bad):
        raise CohortError(
            f"{where}: mpp must be a positive number (µm/px) or empty; bad value(s) "
            + ", ".join(f"{table['slide_id'][i]}={mpp_text[i]!r}" for i in bad)
        )
    resolved = [p if Path(p).is_absolute() else str(path.parent / p) for p in table["path"]]
    return pd.DataFrame({"slide_id": table["slide_id"], "path": resolved, "mpp": mpp.astype(float)})

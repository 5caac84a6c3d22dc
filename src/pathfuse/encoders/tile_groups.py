"""Which patient or slide each tile of a tile dataset comes from (its ``group``).

Tiles of one slide are not independent: a split that puts tiles of one patient on both sides
leaks, and a bootstrap that resamples tiles makes the CIs too narrow. A tile dataset names its
groups in one of three ways, in this order:

* ``tile_datasets.<name>.groups``: a CSV ``sample_id,group`` (every sample must be listed);
* ``tile_datasets.<name>.group_pattern``: a regex searched in each image's file name (a
  features-format dataset has no files: its sample id), e.g. a TCGA barcode ``^(TCGA-..-....)``;
* the dataset's own groups: a ``group`` column of a features-format label table, or the
  ``wsi`` column of PatchCamelyon's meta CSV.

The group becomes the samples' ``patient_id`` (:mod:`pathfuse.data.labels`), so holdout and
k-fold splits keep a group on one side and the bootstrap resamples groups. Where none is given
each tile is its own group, and the tables say that the CIs are per tile.
:data:`GROUP_SOURCE_KEY` records in the tile-feature index which of these applied.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from pathfuse.config import ConfigError, TileDatasetSpec

#: Key of the tile-feature index's metadata that says where the groups came from.
GROUP_SOURCE_KEY = "group_source"
#: ``group_source`` of a dataset without groups: every tile is its own unit.
NO_GROUP = "none"


def assign_groups(spec: TileDatasetSpec, samples: pd.DataFrame) -> pd.DataFrame:
    """``samples`` with its ``group`` column set from the dataset's configured source.

    ``attrs[GROUP_SOURCE_KEY]`` says which source gave the groups: ``csv:<path>``,
    ``pattern:<regex>``, ``dataset`` (the listing's own groups) or :data:`NO_GROUP`.
    """
    if spec.groups and spec.group_pattern:
        raise ConfigError(f"tile_datasets.{spec.name}: give 'groups' or 'group_pattern', not both")
    out = samples.copy()
    if spec.groups:
        out["group"], source = _from_csv(spec, out), f"csv:{spec.groups}"
    elif spec.group_pattern:
        out["group"], source = _from_pattern(spec, out), f"pattern:{spec.group_pattern}"
    else:
        own = out["group"].astype(str).where(out["group"].astype(str) != "", out["sample_id"].astype(str))
        out["group"] = own
        source = NO_GROUP if (own == out["sample_id"].astype(str)).all() else "dataset"
    out.attrs[GROUP_SOURCE_KEY] = source
    return out


def read_sample_table(path: Path, columns: tuple[str, ...], what: str) -> pd.DataFrame:
    """A CSV keyed by ``sample_id`` (strings, no NaN), checked before anything uses it.

    It must exist, have ``columns`` and list each sample once; every error names the file and what
    it needs.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{what} does not exist")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = set(columns) - set(table.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}; need {','.join(columns)}")
    if table["sample_id"].duplicated().any():
        dupes = table.loc[table["sample_id"].duplicated(), "sample_id"].tolist()[:5]
        raise ValueError(f"{path}: samples listed twice, e.g. {dupes}")
    return table


def _from_csv(spec: TileDatasetSpec, samples: pd.DataFrame) -> pd.Series:
    path = Path(spec.groups or "")
    table = read_sample_table(path, ("sample_id", "group"), f"tile_datasets.{spec.name}.groups: {path}")
    mapping = table.set_index("sample_id")["group"].str.strip()
    group = samples["sample_id"].astype(str).map(mapping)
    unlisted = samples.loc[group.isna() | (group == ""), "sample_id"].tolist()
    if unlisted:
        raise ValueError(f"{path}: {len(unlisted)} sample(s) of tile dataset {spec.name} have no group, e.g. "
                         f"{unlisted[:5]}; list every sample (tile_datasets.{spec.name}.groups)")
    return group.astype(str)


def _from_pattern(spec: TileDatasetSpec, samples: pd.DataFrame) -> pd.Series:
    try:
        pattern = re.compile(spec.group_pattern or "")
    except re.error as err:
        raise ConfigError(f"tile_datasets.{spec.name}.group_pattern: not a regular expression: {err}") \
            from None
    files, ids = samples["file"].astype(str), samples["sample_id"].astype(str)
    names = [Path(f).name if f else s for f, s in zip(files, ids, strict=True)]
    groups, unmatched = [], []
    for name in names:
        match = pattern.search(name)
        key = "group" if "group" in pattern.groupindex else (1 if pattern.groups else 0)
        group = match.group(key) if match is not None else None
        if not group:
            unmatched.append(name)
        groups.append(group or "")
    if unmatched:
        raise ConfigError(f"tile_datasets.{spec.name}.group_pattern {spec.group_pattern!r} matches no group "
                          f"in {len(unmatched)} file name(s), e.g. {unmatched[:5]}")
    return pd.Series(groups, index=samples.index, dtype=str)

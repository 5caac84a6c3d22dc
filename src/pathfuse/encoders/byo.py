"""Bring your own features: import precomputed embeddings instead of running stage 1.

* Slides: a folder of TRIDENT/CLAM-style HDF5 bags, one ``<slide_id>.h5`` per slide with
  ``features`` (or ``feats``) [n, d] — a leading batch axis of 1 is dropped — and ``coords``
  [n, 2]. Configured as ``embedding.byo.slides.<encoder>.<cohort>: <folder>``.
* Tile datasets: one feature matrix per (encoder, dataset) — ``.npy`` (rows in the order of the
  dataset's label table), ``.h5`` (``features``/``feats`` plus an optional id dataset), or
  ``.parquet``/``.csv`` (an id column plus a list column ``features``/``embedding`` or numeric
  columns). Configured as ``embedding.byo.tiles.<encoder>.<dataset>: {path, ids}``.

Imported features are validated (shape, dtype, the registry's dim, ids matching the labels)
and non-finite values handled by ``embedding.byo.nan_policy``: ``error`` (name the encoder and
the samples), ``drop`` (drop those tiles/samples) or ``impute_mean`` (column means over finite
values — of the bag for slides, of the training split for tile datasets so test statistics never
leak). The effect is recorded in each output's metadata. Outputs are exactly those of stage 1,
so every later stage treats imported and computed features alike.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

import pathfuse
from pathfuse.config import Config, ConfigError
from pathfuse.data.bags import COORDS_ABSENT
from pathfuse.encoders import bag_scan, sources
from pathfuse.encoders.feature_files import FEATURES_SCHEMA_VERSION, finished_features
from pathfuse.encoders.registry import EncoderSpec, encoder_spec
from pathfuse.encoders.tile_groups import GROUP_SOURCE_KEY
from pathfuse.encoders.tile_sources import INDEX_COLUMNS, list_samples
from pathfuse.encoders.weights import file_sha256
from pathfuse.io import write_parquet, write_safetensors
from pathfuse.paths import shard_name

log = logging.getLogger(__name__)

FEATURE_KEYS = sources.FEATURE_KEYS


class FeatureImportError(ValueError):
    """Imported features are unusable; the message names the encoder, the file and the samples."""


def import_slide_features(cfg: Config, encoder: str, cohort: str, shard: int) -> Path:
    """Import the HDF5 bags of one shard as stage-1 slide features; return the shard manifest."""
    spec = encoder_spec(cfg, encoder)
    folder = sources.check_folder(cfg, encoder, cohort)
    policy = cfg.settings.embedding.byo.nan_policy
    bags = sources.shard_bags(cfg, encoder, cohort, shard)
    verdicts = sources.bag_verdicts(cfg, encoder, cohort)
    bad = {s: verdicts[s] for s in bags if verdicts[s].status in bag_scan.BAD_FILE}
    if bad and cfg.settings.embedding.byo.on_bad_file == "stop":
        raise FeatureImportError(sources.bad_file_message(cfg, encoder, cohort, bad))
    rows = []
    for slide_id, source in tqdm(bags.items(), desc=f"import {encoder}", unit="slide"):
        out = cfg.layout.features(encoder, cohort, slide_id)
        done = finished_features(out, encoder)
        verdict = verdicts[slide_id]
        if verdict.status in (bag_scan.EMPTY, *bag_scan.BAD_FILE):
            # Not imported: the sample set leaves the slide out of every task, with this reason.
            reason = "empty bag" if verdict.status == bag_scan.EMPTY else f"unusable bag ({verdict.detail})"
            rows.append({"slide_id": slide_id, "status": "skipped", "reason": reason, "n_tiles": 0,
                         "dim": spec.dim, "features_path": ""})
        elif done is None:
            rows.append(_import_bag(spec, cohort, slide_id, source, out, policy))
        else:
            n_tiles, dim, fmeta = done
            effect = {k: int(fmeta.get(k, 0)) for k in ("n_rows_dropped", "n_values_imputed")}
            rows.append({"slide_id": slide_id, "status": "ok", "reason": _effect_reason(effect), "n_tiles": n_tiles,
                         "dim": dim, "features_path": str(out)})
    df = pd.DataFrame(rows, columns=["slide_id", "status", "reason", "n_tiles", "dim", "features_path"])
    df = df.astype({"n_tiles": "int64", "dim": "int64"})
    meta = {"encoder": encoder, "cohort": cohort, "shard": shard, "byo": str(folder), "nan_policy": policy}
    if sources.is_features_only(cfg, cohort):
        cover = sources.coverage(cfg, cohort, sources.cohort_encoders(cfg, cohort))
        meta["left_out"] = cover.dropped  # slides some encoder has no bag for (the same in every shard)
    return write_parquet(df, cfg.layout.feature_shard(encoder, cohort, shard_name(shard)),
                         schema="feature_shard", meta=meta)


def _import_bag(spec: EncoderSpec, cohort: str, slide_id: str, source: Path, out: Path,
                policy: str) -> dict[str, Any]:
    import h5py

    with h5py.File(source, "r") as fh:  # readable, with a features dataset: bag_scan checked it
        key = next(k for k in FEATURE_KEYS if k in fh)
        feats = _squeeze(np.asarray(fh[key]))
        has_coords = "coords" in fh
        # Bags without coords (e.g. STAMP-style features + tile names) still train experts;
        # the feature-level fusers, which align tiles across encoders, refuse them by name.
        coords = _squeeze(np.asarray(fh["coords"])) if has_coords else np.full((len(feats), 2), -1, np.int64)
        attrs = {k: _plain(v) for k, v in fh["coords"].attrs.items()} if has_coords else {}
    where = f"encoder {spec.name!r}, slide {slide_id} ({source})"
    _check_matrix(feats, spec, where)
    if coords.shape != (len(feats), 2):
        raise FeatureImportError(f"{where}: coords have shape {coords.shape}, expected ({len(feats)}, 2)")
    feats, keep, effect = apply_nan_policy(feats.astype(np.float32), policy, where,
                                           lambda rows: [f"tile {i} (x={coords[i, 0]}, y={coords[i, 1]})"
                                                         for i in rows])
    coords = coords[keep].astype(np.int64)
    half = _to_half(feats, where)
    metadata = {
        "encoder": spec.name, "weights_sha256": "byo", "source": str(source), "source_sha256": file_sha256(source),
        "mpp": str(attrs.get("mpp", "unknown")), "tile_px": str(attrs.get("patch_size", "unknown")),
        "code_version": pathfuse.__version__, "schema_version": str(FEATURES_SCHEMA_VERSION),
        "slide_id": slide_id, "cohort": cohort, "dim": str(spec.dim), "source_attrs": attrs,
        "coords": "present" if has_coords else COORDS_ABSENT, **effect,
    }
    write_safetensors({"features": half, "coords": coords}, out, metadata=metadata)
    reason = _effect_reason(effect)
    return {"slide_id": slide_id, "status": "ok", "reason": reason, "n_tiles": len(half), "dim": spec.dim,
            "features_path": str(out)}


def import_tile_features(cfg: Config, encoder: str, dataset: str) -> Path:
    """Import a tile dataset's feature matrix for ``encoder``; return the index Parquet path."""
    spec = encoder_spec(cfg, encoder)
    source = _require(sources.tile_source(cfg, encoder, dataset), f"embedding.byo.tiles.{encoder}.{dataset}", encoder)
    path = Path(source.path)
    policy = cfg.settings.embedding.byo.nan_policy
    table = list_samples(cfg, dataset).reset_index(drop=True)
    where = f"encoder {spec.name!r}, dataset {dataset} ({path})"
    matrix, ids = read_matrix(path, source.ids)
    _check_matrix(matrix, spec, where)
    matrix = align_rows(matrix, ids, table["sample_id"].tolist(), where)
    train = (table["split"] == "train").to_numpy()
    names = table["sample_id"].tolist()
    feats, keep, effect = apply_nan_policy(matrix.astype(np.float32), policy, where,
                                           lambda rows: [names[i] for i in rows],
                                           stats_rows=train if train.any() else None)
    half = _to_half(feats, where)
    kept = table.loc[keep, INDEX_COLUMNS].reset_index(drop=True)
    metadata = {"encoder": encoder, "weights_sha256": "byo", "source": str(path), "source_sha256": file_sha256(path),
                "code_version": pathfuse.__version__, "schema_version": str(FEATURES_SCHEMA_VERSION),
                "dataset": dataset, "dim": str(spec.dim), **effect}
    write_safetensors({"features": half}, cfg.layout.tile_features(encoder, dataset), metadata=metadata)
    index = pd.DataFrame({"row": np.arange(len(kept), dtype=np.int64),
                          **{c: kept[c].astype(str) for c in INDEX_COLUMNS}})
    dropped = [{"sample_id": names[i], "reason": "NaN/Inf features"} for i in np.flatnonzero(~keep)]
    meta = {"encoder": encoder, "dataset": dataset, "format": "byo", "source": str(path), "dim": spec.dim,
            "weights_sha256": "byo", "nan_policy": policy, "dropped": dropped, **effect,
            GROUP_SOURCE_KEY: table.attrs[GROUP_SOURCE_KEY]}
    return write_parquet(index, cfg.layout.tile_feature_index(encoder, dataset), schema="tile_feature_index",
                         meta=meta)


def read_matrix(path: Path, ids_key: str | None) -> tuple[np.ndarray, list[str] | None]:
    """A feature matrix and its sample ids (None: rows follow the label table's order)."""
    if not path.is_file():
        raise FileNotFoundError(f"BYO feature matrix {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        if ids_key:
            raise ConfigError(f"{path}: .npy files carry no ids; drop 'ids' or use .h5/.parquet/.csv")
        return np.load(path), None
    if suffix in (".h5", ".hdf5"):
        import h5py

        with h5py.File(path, "r") as fh:
            key = next((k for k in FEATURE_KEYS if k in fh), None)
            if key is None:
                raise FeatureImportError(f"{path}: no 'features' or 'feats' dataset; it has {sorted(fh.keys())}")
            matrix = _squeeze(np.asarray(fh[key]))
            if ids_key and ids_key not in fh:
                raise FeatureImportError(f"{path}: no id dataset {ids_key!r}; it has {sorted(fh.keys())}")
            ids = [_plain(v) for v in np.asarray(fh[ids_key]).reshape(-1)] if ids_key else None
        return matrix, [str(i) for i in ids] if ids is not None else None
    if suffix in (".parquet", ".csv"):
        table = pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(path)
        ids_key = ids_key or ("sample_id" if "sample_id" in table.columns else None)
        ids = table.pop(ids_key).astype(str).tolist() if ids_key else None
        list_col = next((c for c in ("features", "embedding") if c in table.columns), None)
        if list_col is not None:
            return np.stack(list(table[list_col])), ids
        return table.select_dtypes("number").to_numpy(), ids
    raise ConfigError(f"{path}: unsupported feature matrix type {suffix!r}; use .npy, .h5, .parquet or .csv")


def align_rows(matrix: np.ndarray, ids: list[str] | None, wanted: list[str], where: str) -> np.ndarray:
    """Rows of ``matrix`` in the order of ``wanted`` sample ids (every one must be present)."""
    if ids is None:
        if len(matrix) != len(wanted):
            raise FeatureImportError(f"{where}: {len(matrix)} rows but the label table has {len(wanted)} samples; "
                               "without ids the rows must follow the label table one to one")
        return matrix
    if len(ids) != len(matrix):
        raise FeatureImportError(f"{where}: {len(ids)} ids for {len(matrix)} rows")
    position = pd.Index(ids)
    if position.has_duplicates:
        raise FeatureImportError(f"{where}: duplicate ids, e.g. {position[position.duplicated()][:5].tolist()}")
    rows = position.get_indexer(pd.Index(wanted))
    missing = [w for w, r in zip(wanted, rows, strict=True) if r < 0]
    if missing:
        raise FeatureImportError(f"{where}: {len(missing)} sample(s) of the label table have no features, e.g. "
                           f"{missing[:10]}")
    if len(ids) > len(wanted):
        log.warning("%s: %d feature rows are not in the label table and are ignored", where, len(ids) - len(wanted))
    return matrix[rows]


def apply_nan_policy(feats: np.ndarray, policy: str, where: str, describe: Any,
                     stats_rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Handle non-finite values; return (features, kept-row mask, effect for the metadata)."""
    finite = np.isfinite(feats)
    bad_rows = np.flatnonzero(~finite.all(axis=1))
    keep = np.ones(len(feats), dtype=bool)
    effect: dict[str, Any] = {"nan_policy": policy, "n_rows_dropped": 0, "n_values_imputed": 0}
    if not len(bad_rows):
        return feats, keep, effect
    if policy == "error":
        raise FeatureImportError(f"{where}: NaN/Inf in {len(bad_rows)} row(s): {describe(bad_rows[:10])}; fix the "
                           "features or set embedding.byo.nan_policy to drop or impute_mean")
    if policy == "drop":
        keep[bad_rows] = False
        effect["n_rows_dropped"] = len(bad_rows)
        log.warning("%s: dropped %d row(s) with NaN/Inf: %s", where, len(bad_rows), describe(bad_rows[:10]))
        return feats[keep], keep, effect
    basis = feats if stats_rows is None else feats[stats_rows]
    basis_finite = np.isfinite(basis)
    counts = basis_finite.sum(axis=0)
    if (counts == 0).any():
        raise FeatureImportError(f"{where}: feature column(s) {np.flatnonzero(counts == 0)[:10].tolist()} have no "
                           "finite value to impute from")
    means = np.where(basis_finite, basis, 0.0).sum(axis=0) / counts
    out = np.where(finite, feats, means[None, :]).astype(np.float32)
    effect["n_values_imputed"] = int((~finite).sum())
    log.warning("%s: imputed %d NaN/Inf value(s) in %d row(s) with column means", where,
                effect["n_values_imputed"], len(bad_rows))
    return out, keep, effect


def _check_matrix(feats: np.ndarray, spec: EncoderSpec, where: str) -> None:
    if feats.ndim != 2:
        raise FeatureImportError(f"{where}: features have shape {feats.shape}, expected [n, {spec.dim}]")
    if not np.issubdtype(feats.dtype, np.floating):
        raise FeatureImportError(f"{where}: features have dtype {feats.dtype}, expected a float type")
    if feats.shape[1] != spec.dim:
        raise FeatureImportError(f"{where}: features are {feats.shape[1]}-d but the encoder registry says dim "
                           f"{spec.dim}; fix 'dim' of {spec.name!r} in the encoder registry or the file")


def _to_half(feats: np.ndarray, where: str) -> np.ndarray:
    half = feats.astype(np.float16)
    overflow = np.flatnonzero(~np.isfinite(half).all(axis=1))
    if len(overflow):
        raise FeatureImportError(f"{where}: {len(overflow)} row(s) exceed the float16 range (|x| > 65504), first "
                           f"row {int(overflow[0])}; rescale the features")
    return half


def _effect_reason(effect: dict[str, Any]) -> str:
    if effect["n_rows_dropped"]:
        return f"{effect['n_rows_dropped']} tile(s) with NaN/Inf dropped"
    if effect["n_values_imputed"]:
        return f"{effect['n_values_imputed']} NaN/Inf value(s) imputed"
    return ""


def _squeeze(array: np.ndarray) -> np.ndarray:
    while array.ndim > 2 and array.shape[0] == 1:
        array = array[0]
    return array


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    return value.tolist() if hasattr(value, "tolist") else value


def _require(value: Any, key: str, encoder: str) -> Any:
    if value is None:
        raise ConfigError(f"encoder {encoder!r} imports its features but {key} is not set in the config")
    return value

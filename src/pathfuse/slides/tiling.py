"""Stage entry points: ``tile_shard`` (one job per cohort shard) and ``index_cohort``.

``tile_shard`` tiles the shard's slides one by one, skipping slides already tiled with the same
settings (a re-run after a kill resumes), and writes the shard manifest last: that file is what
Snakemake tracks. ``index_cohort`` gathers the manifests into the cohort's ``_index.parquet``
(slides that made it) and ``_skipped.parquet`` (slides that did not, with the reason), after
checking the cohort against the label tables of the tasks that use it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
from tqdm import tqdm

from pathfuse.config import Config
from pathfuse.io import SchemaError, read_parquet, read_parquet_meta, write_parquet
from pathfuse.paths import shard_name
from pathfuse.reproducibility import derive_seed
from pathfuse.settings import TilingSettings
from pathfuse.slides.cohort import list_slides, scan_slides, shard_slides
from pathfuse.slides.errors import CohortError, SlideError
from pathfuse.slides.mpp import read_mpp_overrides
from pathfuse.slides.slide_tiles import SlideJob, grid_key, tile_slide

log = logging.getLogger(__name__)

SHARD_COLUMNS = ["slide_id", "path", "status", "reason", "cause", "n_tiles", "tiles_path"]
SKIPPED_COLUMNS = ["slide_id", "path", "reason", "cause"]
#: Most slide ids named in one error message.
MAX_NAMED = 20


def tile_shard(cfg: Config, cohort: str, shard: int) -> Path:
    """Tile one shard of a cohort's slides; return the shard manifest's path.

    With ``tiling.on_slide_error: skip`` a bad slide (and, in shard 0, every unsafe or duplicate
    slide id of the cohort) becomes a ``skipped`` row with its reason; with ``fail`` the first
    bad slide raises, naming the slide, the file and the fix.
    """
    settings = cfg.settings.tiling
    spec = cfg.cohort(cohort)
    if settings.on_slide_error == "skip":
        slides, rejected = scan_slides(spec)
    else:
        slides, rejected = list_slides(spec), pd.DataFrame(columns=SKIPPED_COLUMNS)
    if slides.empty and rejected.empty:
        source = f"manifest {spec.manifest}" if spec.manifest else f"glob {spec.slides!r}"
        raise CohortError(f"cohort {cohort!r}: {source} lists no slide files; fix cohorts.{cohort} in the config")
    overrides = read_mpp_overrides(spec.mpp_overrides, cohort)
    unknown = sorted(set(overrides) - set(slides["slide_id"]) - set(rejected["slide_id"]))
    if unknown:
        log.warning("mpp override table %s names slides not in cohort %r: %s",
                    spec.mpp_overrides, cohort, unknown[:MAX_NAMED])
    n_shards = cfg.n_shards(cohort)
    part = shard_slides(slides, shard, n_shards)
    rows = [_skipped_row(r.slide_id, r.path, r.cause, r.reason) for r in _records(rejected)] if shard == 0 else []
    for entry in tqdm(_records(part), total=len(part), desc=f"tile {cohort} {shard_name(shard)}"):
        override = overrides.get(entry.slide_id, entry.mpp)
        job = SlideJob(
            cohort=cohort,
            slide_id=entry.slide_id,
            path=entry.path,
            override_mpp=None if pd.isna(override) else float(override),
            override_hint=_override_hint(spec.mpp_overrides, cohort, entry.slide_id),
            tiles_path=cfg.layout.tiles(cohort, entry.slide_id),
            qc_path=cfg.layout.qc(cohort, entry.slide_id),
            seed=derive_seed(cfg.seed, "tiling", cohort, entry.slide_id, bits=64),  # tiling's width
        )
        rows.append(_tile_or_record(job, settings, cfg.layout.tile_skipped(cohort)))
    manifest = pd.DataFrame(rows, columns=SHARD_COLUMNS).astype({"n_tiles": "int64"})
    n_skipped = int((manifest["status"] == "skipped").sum())
    if n_skipped:
        log.warning("cohort %r %s: %d slide(s) skipped", cohort, shard_name(shard), n_skipped)
    out = cfg.layout.tile_shard(cohort, shard_name(shard))
    meta = {"cohort": cohort, "shard": shard, "n_shards": n_shards, "settings": settings.grid_key()}
    return write_parquet(manifest, out, schema="tile_shard", meta=meta)


def index_cohort(cfg: Config, cohort: str) -> None:
    """Write the cohort's ``_index.parquet`` (ok slides) and ``_skipped.parquet`` (the rest).

    Reads only the shard manifests: label tables are checked by the expert jobs of the tasks that
    read them, so editing one label table reruns only those tasks, not the whole cohort.
    """
    n_shards = cfg.n_shards(cohort)
    frames = []
    for shard in range(n_shards):
        path = cfg.layout.tile_shard(cohort, shard_name(shard))
        if not path.exists():
            raise FileNotFoundError(f"{path}: shard manifest missing; run `pathfuse tile --cohort {cohort} "
                                    f"--shard {shard}` (or the workflow) first")
        frames.append(read_parquet(path, schema="tile_shard")[0])
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=SHARD_COLUMNS)
    ok = table[table["status"] == "ok"]
    skipped_table = table.loc[table["status"] != "ok", SKIPPED_COLUMNS].reset_index(drop=True)
    by_cause = skipped_table["cause"].value_counts().to_dict()
    if ok.empty:
        raise CohortError(
            f"cohort {cohort!r}: no slide made it through tiling (skipped by cause: {by_cause}); "
            f"see the shard manifests under {cfg.layout.tile_shard(cohort, '').parent}"
        )
    if len(skipped_table):
        log.warning("cohort %r: %d slide(s) tiled, %d dropped (%s)", cohort, len(ok), len(skipped_table), by_cause)
    meta = {"cohort": cohort, "n_shards": n_shards, "n_ok": len(ok), "n_skipped": len(skipped_table),
            "skipped_by_cause": by_cause}
    write_parquet(skipped_table[SKIPPED_COLUMNS], cfg.layout.tile_skipped(cohort), schema="skipped", meta=meta)
    write_parquet(ok.reset_index(drop=True)[SHARD_COLUMNS], cfg.layout.tile_index(cohort), schema="tile_index",
                  meta=meta)


def _tile_or_record(job: SlideJob, settings: TilingSettings, skipped_path: Path) -> dict[str, object]:
    """Tile one slide (or reuse its tiles); a bad slide raises or becomes a skipped row."""
    n_tiles = _reusable_tiles(job, settings)
    if n_tiles is not None:
        log.info("%s: already tiled (%d tiles), reusing %s", job.slide_id, n_tiles, job.tiles_path)
    else:
        try:
            n_tiles = tile_slide(job, settings)
        except SlideError as err:
            job.tiles_path.unlink(missing_ok=True)  # tiles of an earlier run with other settings
            detail = str(err) if job.path in str(err) else f"{job.path}: {err}"
            if settings.on_slide_error == "fail":
                raise SlideError(err.cause, f"slide {job.slide_id!r} of cohort {job.cohort!r}: {detail}. "
                                 "Or set tiling.on_slide_error: skip to record it and go on") from err
            log.warning("skipping slide %r: %s", job.slide_id, detail)
            return _skipped_row(job.slide_id, job.path, err.cause, detail)
    return {"slide_id": job.slide_id, "path": job.path, "status": "ok", "reason": "", "cause": "",
            "n_tiles": n_tiles, "tiles_path": str(job.tiles_path)}


def _reusable_tiles(job: SlideJob, settings: TilingSettings) -> int | None:
    """Tile count of an existing tiles file made with the same settings, else None."""
    if not job.tiles_path.exists():
        return None
    try:
        meta = read_parquet_meta(job.tiles_path, schema="tiles")
        n_rows = pq.ParquetFile(job.tiles_path).metadata.num_rows
    except (SchemaError, OSError, ValueError) as err:
        log.warning("%s: unusable tiles file (%s); tiling again", job.tiles_path, err)
        return None
    if meta.get("grid_key") != grid_key(settings, job):
        log.info("%s: tiling settings changed since %s was written; tiling again", job.slide_id, job.tiles_path)
        return None
    return n_rows


def _records(frame: pd.DataFrame) -> Iterator[Any]:
    """The frame's rows as named tuples, typed ``Any``: the stubs type every field as any scalar."""
    return frame.itertuples()


def _skipped_row(slide_id: str, path: str, cause: str, reason: str) -> dict[str, object]:
    return {"slide_id": slide_id, "path": path, "status": "skipped", "reason": reason, "cause": cause,
            "n_tiles": 0, "tiles_path": ""}


def _override_hint(table: str | None, cohort: str, slide_id: str) -> str:
    row = f"'{slide_id},<µm per pixel>'"
    if table:
        return f"Fix: add the row {row} to the mpp override table {table}"
    return (f"Fix: give the slide's mpp in a CSV (slide_id,mpp) with the row {row} and set "
            f"cohorts.{cohort}.mpp_overrides to it (or an mpp column in the cohort's manifest)")

"""The synthetic demo cohort: slides, tile datasets, label tables and split CSVs.

``generate_demo(cfg)`` writes, under ``demo.out_dir``, everything the demo config points at,
in the formats of the real data (../shared/docs/TASKS.md), so that every stage runs on the demo
exactly as it would on real data:

* ``slides/<slide_id>.tiff`` — pyramidal, tiled, JPEG TIFFs (half Aperio-style, half generic);
* ``labels/*.csv`` — label tables, one row per slide; ``splits/<task>/splits_<fold>.csv`` —
  ``train,val,test`` columns of case ids (``surv_gbmlgg`` reproduces the published defect of
  a val column identical to test);
* ``tiles/<task>/…`` — class-named image folders and PatchCamelyon-style HDF5;
* ``truth/latent.csv`` — the hidden factors (for tests and curiosity; no stage reads it);
* ``demo.done`` — a manifest (settings + SHA-256 of every file), written last.

* ``README.md`` — what the cohort is and why fusion should win on it.

Each case has four latent factors (stain hue, nucleus size at constant nuclear area, nuclear
density, tumour fraction) rendered as different image properties, and every label is a noisy
mix in which factors that different demo encoders see carry comparable weight: the demo is a
positive control for fusion (:mod:`pathfuse.demo.design`, docs/demo.md).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from pathfuse.config import Config, TaskSpec
from pathfuse.demo.cohort import make_cohort, make_labels
from pathfuse.demo.design import (
    LATENT,
    CoarserClasses,
    Design,
    MutationColumn,
    RankedClasses,
    SurvivalTimes,
    demo_designs,
    label_table,
    readme,
)
from pathfuse.demo.external import FOLDER as EXTERNAL
from pathfuse.demo.external import external_slides, write_external_labels
from pathfuse.demo.slides import render_slide, write_pyramid_tiff
from pathfuse.demo.splits import make_splits, write_csv, write_split_csv
from pathfuse.demo.tiles import (
    TileDatasetPlan,
    TileJob,
    plan_tile_jobs,
    render_tile_job,
    seeded_rng,
    write_pcam,
    write_tile_images,
)
from pathfuse.demo.tissue import TissueLook
from pathfuse.io import atomic_path, write_json
from pathfuse.reproducibility import file_sha256

log = logging.getLogger(__name__)

#: Bump when the generator's output changes for the same settings (invalidates demo.done).
DEMO_FORMAT = 2
TILE_JPEG_QUALITY = 90  # the one JPEG tile dataset (crc_msi)


@dataclass(frozen=True)
class DemoTasks:
    """The tasks the demo makes data for (:func:`task_facts`), with what the files need of them."""

    designs: dict[str, Design]  # task id → its design (pathfuse.demo.design), in manifest order
    tasks: dict[str, TaskSpec]
    classes: dict[str, list[Any]]  # task id → class list, for tasks whose labels are class names
    folders: dict[str, list[str]]  # label table / split folder → the tasks sharing it
    folds: dict[str, int]  # split folder → folds to write


@dataclass(frozen=True)
class SlideJob:
    """One slide to render and write (a unit of work for the process pool)."""

    seed: int
    slide_id: str
    path: Path
    width: int
    height: int
    mpp: float
    jpeg_quality: int
    aperio: bool
    look: TissueLook


# ----------------------------------------------------------------------------- jobs
def _run_job(job: SlideJob | TileJob) -> tuple[SlideJob | TileJob, list[Path], np.ndarray | None]:
    """Render and write one slide or one tile-class job (runs in a worker process)."""
    if isinstance(job, SlideJob):
        rng = seeded_rng(job.seed, "slide", job.slide_id, "pixels")
        levels = render_slide(rng, job.width, job.height, job.mpp, job.look)
        write_pyramid_tiff(job.path, levels, job.mpp, job.jpeg_quality, job.aperio)
        return job, [job.path], None
    images = render_tile_job(job)
    if job.plan.extension == "h5":
        return job, [], images
    return job, write_tile_images(job, images, TILE_JPEG_QUALITY), None


def _single_blas_thread() -> None:
    """Worker set-up: the renderer's matrix products are small; BLAS threads only add contention."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def _run_all(
    jobs: list[SlideJob | TileJob], workers: int
) -> list[tuple[SlideJob | TileJob, list[Path], np.ndarray | None]]:
    """Run jobs in ``workers`` forked processes (each job seeds itself: order does not matter)."""
    from threadpoolctl import threadpool_limits

    progress: dict[str, Any] = {"total": len(jobs), "desc": "demo data", "unit": "job"}
    if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        with threadpool_limits(1):
            return [_run_job(job) for job in tqdm(jobs, **progress)]
    # fork, not spawn: spawn re-runs the caller's main module, which under Snakemake's
    # script directive would start the stage again in every worker.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                             initializer=_single_blas_thread) as pool:
        return list(tqdm(pool.map(_run_job, jobs), **progress))


# ----------------------------------------------------------------------------- entry point
def generate_demo(cfg: Config) -> Path:
    """Write the demo cohort under ``demo.out_dir``; return the path of ``demo.done``.

    Does nothing when ``demo.done`` exists with the same settings and all its files are
    present. The same seed and settings always give the same bytes. Files of an earlier demo
    (listed in its manifest) that the new one does not write are removed, so a smaller demo
    never inherits slides from a bigger one.
    """
    settings = cfg.settings.demo
    out = Path(settings.out_dir)
    done = out / "demo.done"
    demo = task_facts(cfg)
    fingerprint = {"format": DEMO_FORMAT, "seed": cfg.seed, "classes": demo.classes, "folds": demo.folds,
                   **{k: v for k, v in settings.model_dump().items() if k not in ("enabled", "out_dir", "workers")}}
    previous = _read_manifest(done)
    if previous.get("fingerprint") == fingerprint and all((out / f).is_file() for f in previous.get("files", {})):
        log.info("demo data in %s is up to date", out)
        return done
    done.unlink(missing_ok=True)
    log.info("generating the demo cohort in %s (%d cases, %d workers)", out, settings.n_cases, settings.workers)

    slides = make_cohort(cfg.seed, settings)
    cases = slides.drop_duplicates("case_id").reset_index(drop=True)
    written = _write_tables(cfg.seed, out, slides, cases, demo, settings.label_noise)
    slide_rows = zip(slides["slide_id"], slides["width"], slides["height"], slides["aperio"], slides["look"],
                     strict=True)
    jobs: list[SlideJob | TileJob] = [
        SlideJob(cfg.seed, slide_id, out / "slides" / f"{slide_id}.tiff", width, height,
                 settings.mpp, settings.jpeg_quality, bool(aperio), look)
        for slide_id, width, height, aperio, look in slide_rows
    ]
    if settings.external.n_cases:  # another "scanner": stain and resolution shifted (pathfuse.demo.external)
        external = external_slides(cfg.seed, settings)
        written += write_external_labels(cfg.seed, out, external, demo.designs, demo.tasks, settings.label_noise)
        jobs += [SlideJob(cfg.seed, slide_id, out / EXTERNAL / "slides" / f"{slide_id}.tiff", width, height,
                          settings.external.mpp, settings.jpeg_quality, bool(aperio), look)
                 for slide_id, width, height, aperio, look in zip(
                     external["slide_id"], external["width"], external["height"], external["aperio"],
                     external["look"], strict=True)]
    tile_datasets = [d for d in demo.designs.values() if isinstance(d, TileDatasetPlan)]
    tile_classes = {t: [str(c) for c in demo.classes[t]] for t in demo.classes}
    jobs += plan_tile_jobs(cfg.seed, out / "tiles", tile_datasets, tile_classes, settings.tile_images_per_class)
    pcam: dict[str, list[tuple[int, np.ndarray]]] = {}
    for job, paths, images in _run_all(jobs, settings.workers):
        written += paths
        if isinstance(job, TileJob) and images is not None:  # only HDF5 tile jobs return their images
            pcam.setdefault(job.split, []).append((job.class_index, images))
    for split, parts in sorted(pcam.items()):
        written += write_pcam(out / "tiles", cfg.seed, split, parts)

    files = {str(p.relative_to(out)): file_sha256(p) for p in sorted(written)}
    for stale in sorted(set(previous.get("files", {})) - set(files)):
        (out / stale).unlink(missing_ok=True)
    write_json({"fingerprint": fingerprint, "files": files}, done)
    log.info("demo data: %d slides of %d cases, %d files in %s", len(slides), len(cases), len(files), out)
    return done


def _write_tables(seed: int, out: Path, slides: pd.DataFrame, cases: pd.DataFrame, demo: DemoTasks,
                  noise: float) -> list[Path]:
    """Label tables (one row per slide), split CSVs and the hidden factors; return the paths."""
    written = []
    tables = make_labels(seed, cases, demo.designs, demo.tasks, noise)
    for stem, table in tables.items():
        path = out / "labels" / f"{stem}.csv"
        write_csv(slides[["case_id", "slide_id"]].merge(table, on="case_id", how="left"), path)
        written.append(path)
    case_ids = cases["case_id"].tolist()
    for folder, n_folds in demo.folds.items():
        table, first = tables[folder], demo.folders[folder][0]
        design = demo.designs[first]
        if isinstance(design, MutationColumn):  # stratified by the first column, every column covered
            strata, coverage = table.iloc[:, 1].to_numpy(), [table[c].to_numpy() for c in table.columns[1:]]
        elif isinstance(design, SurvivalTimes):
            strata = table[str(demo.tasks[first].censorship_column)].to_numpy()
            coverage = [strata]
        else:
            strata = table.iloc[:, 1].astype(str).to_numpy()
            coverage = [strata]
        for fold, split in enumerate(make_splits(seed, folder, case_ids, strata, n_folds, coverage)):
            if isinstance(design, SurvivalTimes) and design.val_equals_test:
                split = {"train": split["train"] + split["val"], "val": split["test"], "test": split["test"]}
                split["train"].sort()
            path = out / "splits" / folder / f"splits_{fold}.csv"
            write_split_csv(path, split)
            written.append(path)
    path = out / "README.md"
    with atomic_path(path) as tmp:
        tmp.write_text(readme(len(cases), len(slides), noise, demo.designs, demo.tasks))
    written.append(path)
    truth = slides[["case_id", "slide_id", *LATENT]].assign(
        **{f"look_{k}": [getattr(look, k) for look in slides["look"]] for k in asdict(TissueLook())})
    path = out / "truth" / "latent.csv"
    write_csv(truth, path)
    return [*written, path]


def demo_tasks(cfg: Config) -> list[TaskSpec]:
    """The tasks the demo makes data for: the registry's benchmark tasks (``lp22``), then the run's others.

    So a new registry entry gets demo data by being run.
    """
    ids = [task_id for task_id, entry in cfg.task_registry.items() if entry.get("lp22")]
    return [cfg.task(t) for t in [*ids, *(t for t in cfg.task_ids if t not in ids)]]


def task_facts(cfg: Config) -> DemoTasks:
    """The demo's tasks with their designs, class lists, and fold counts per split folder.

    All come from the config (task registry merged with ``task_data``), so the demo writes
    the classes and the ``splits_<fold>.csv`` files the experts stage will look for. A folder
    shared by several tasks (``mutation``) gets the most folds any of them asks for, counting
    only the tasks the run config gives data for when there are any.
    """
    tasks = {task.id: task for task in demo_tasks(cfg)}
    designs = demo_designs(tasks.values())
    classes = {t: list(tasks[t].classes) for t, design in designs.items()
               if isinstance(design, RankedClasses | CoarserClasses | TileDatasetPlan)}
    folders: dict[str, list[str]] = {}
    for task_id, design in designs.items():
        folder = label_table(task_id, design)
        if folder is not None:
            folders.setdefault(folder, []).append(task_id)
    configured = set(cfg.raw.get("task_data", {}))
    folds = {}
    for folder, sharing in folders.items():
        chosen = [t for t in sharing if t in configured] or sharing
        folds[folder] = max(tasks[t].n_folds for t in chosen)
    return DemoTasks(designs, {t: tasks[t] for t in designs}, classes, folders, folds)


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


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
positive control for fusion (:mod:`pathfuse.data.demo_design`, docs/demo.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from pathfuse.config import Config, ConfigError
from pathfuse.data.demo_design import (
    BRACS_3_FROM_7,
    CLASSIFICATION,
    LATENT,
    MUTATION_TASKS,
    MUTATIONS,
    SURVIVAL,
    readme,
)
from pathfuse.data.demo_slides import TissueLook, render_slide, write_pyramid_tiff
from pathfuse.data.demo_tiles import (
    TILE_DATASETS,
    TileJob,
    plan_tile_jobs,
    render_tile_job,
    seeded_rng,
    write_pcam,
    write_tile_images,
)
from pathfuse.io import atomic_path, write_json

log = logging.getLogger(__name__)

#: Bump when the generator's output changes for the same settings (invalidates demo.done).
DEMO_FORMAT = 2
CASE_PREFIX = "DEMO"
VAL_EQUALS_TEST = ("surv_gbmlgg",)
TILE_JPEG_QUALITY = 90  # the one JPEG tile dataset (crc_msi)  # the published defect the experts stage must handle


@dataclass(frozen=True)
class DemoSettings:
    """The ``demo`` section of the run config (keys: src/pathfuse/resources/schemas/sections/demo.schema.yaml)."""

    out_dir: str
    n_cases: int
    two_slide_fraction: float
    slide_width_px: int
    slide_height_px: int
    mpp: float
    aperio_fraction: float
    jpeg_quality: int
    tile_images_per_class: int
    label_noise: float
    workers: int

    @classmethod
    def from_config(cls, cfg: Config) -> DemoSettings:
        section = cfg.section("demo")
        return cls(**{key: section[key] for key in cls.__dataclass_fields__})


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


# ----------------------------------------------------------------------------- cohort
def make_cohort(seed: int, settings: DemoSettings) -> pd.DataFrame:
    """One row per slide: case_id, slide_id, the case's latent factors and the slide's look."""
    rng = seeded_rng(seed, "cohort")
    n = settings.n_cases
    latent = rng.standard_normal((n, len(LATENT)))
    n_two = round(settings.two_slide_fraction * n)
    two_slides = set(rng.choice(n, size=n_two, replace=False).tolist())
    rows = []
    for i in range(n):
        case_id = f"{CASE_PREFIX}-{i + 1:04d}"
        for k in range(2 if i in two_slides else 1):
            rows.append({"case_id": case_id, "slide_id": f"{case_id}-{k + 1:02d}",
                         **dict(zip(LATENT, latent[i], strict=True))})
    slides = pd.DataFrame(rows)
    looks, sizes = [], []
    for slide_id, z in zip(slides["slide_id"], slides[list(LATENT)].to_numpy(), strict=True):
        srng = seeded_rng(seed, "slide", slide_id)
        # Slide-level nuisance on top of the case's factors: stain batches, sectioning.
        looks.append(TissueLook(
            hue=float(z[0] + srng.normal(0, 0.2)), nucleus_scale=float(z[1] + srng.normal(0, 0.15)),
            density=float(z[2] + srng.normal(0, 0.2)),
            tumour=float(np.clip(0.05 + 0.55 * _normal_cdf(z[3]) + srng.normal(0, 0.03), 0.02, 0.7)),
            inflammation=float(srng.uniform(0.0, 0.25)), eosin=float(srng.normal(0, 0.2)),
            tissue_fraction=float(srng.uniform(0.6, 0.8)),
        ))
        steps = srng.integers(-1, 2, size=2) * 256  # sizes vary, never below the schema's 1024
        sizes.append((max(1024, settings.slide_width_px + int(steps[0])),
                      max(1024, settings.slide_height_px + int(steps[1]))))
    slides["look"] = looks
    slides["width"], slides["height"] = zip(*sizes, strict=True)
    n_slides = len(slides)
    slides["aperio"] = [int((i + 1) * settings.aperio_fraction) > int(i * settings.aperio_fraction)
                        for i in range(n_slides)]
    return slides


def _normal_cdf(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def _score(seed: int, cases: pd.DataFrame, weights: tuple[float, ...], noise: float, *key: str) -> np.ndarray:
    """A task's latent score per case: unit-norm mix of the factors plus seeded noise."""
    w = np.asarray(weights, dtype=float)
    signal = cases[list(LATENT)].to_numpy() @ (w / np.linalg.norm(w))
    return signal + noise * seeded_rng(seed, "labels", *key).standard_normal(len(cases))


def _rank_classes(score: np.ndarray, proportions: tuple[float, ...]) -> np.ndarray:
    """Cut the ranked scores into classes of the given proportions (ordinal, lowest first)."""
    ranks = np.argsort(np.argsort(score, kind="stable"), kind="stable")
    edges = np.cumsum(proportions)[:-1] * len(score)
    return np.searchsorted(edges, ranks + 0.5).astype(int)


def make_labels(seed: int, cases: pd.DataFrame, classes: dict[str, list[Any]], noise: float) -> dict[str, pd.DataFrame]:
    """Case-level label tables keyed by file stem (``case_id`` plus the task's columns)."""
    tables: dict[str, pd.DataFrame] = {}
    for task, (weights, proportions) in CLASSIFICATION.items():
        n_classes = len(classes[task])
        index = _rank_classes(_score(seed, cases, weights, noise, task), proportions or (1.0 / n_classes,) * n_classes)
        column = "isup_grade" if task == "panda_isup" else "label"
        tables[task] = pd.DataFrame({"case_id": cases["case_id"], column: [classes[task][i] for i in index]})
        if task == "bracs_7":
            if len(classes["bracs_3"]) != 3 or n_classes != len(BRACS_3_FROM_7):
                raise ConfigError("the demo maps bracs_7's 7 classes onto bracs_3's 3; the task registry differs")
            tables["bracs_3"] = pd.DataFrame({"case_id": cases["case_id"],
                                              "label": [classes["bracs_3"][BRACS_3_FROM_7[i]] for i in index]})
    mutation = {"case_id": cases["case_id"]}
    for column, (weights, prevalence) in MUTATIONS.items():
        positives = max(2, round(prevalence * len(cases)))
        mutation[column] = _rank_classes(_score(seed, cases, weights, noise, column),
                                         (1 - positives / len(cases), positives / len(cases)))
    tables["mutation"] = pd.DataFrame(mutation)
    for cohort, weights in SURVIVAL.items():
        tables[f"surv_{cohort}"] = _survival(seed, cases, weights, noise, cohort)
    return tables


def _survival(seed: int, cases: pd.DataFrame, weights: tuple[float, ...], noise: float, cohort: str) -> pd.DataFrame:
    """Exponential event times whose hazard grows with the latent risk; random censoring.

    A seeded 35–55 % of cases are censored at a uniform fraction of their event time, so the
    censoring fraction is the same at any cohort size and is independent of the risk.
    """
    risk = _score(seed, cases, weights, noise, "surv", cohort)
    rng = seeded_rng(seed, "labels", "surv", cohort, "times")
    event_time = 30.0 * np.exp(-0.8 * risk) * rng.exponential(1.0, len(cases))
    n_censored = round(rng.uniform(0.35, 0.55) * len(cases))
    censored = np.zeros(len(cases), dtype=int)
    censored[rng.choice(len(cases), size=n_censored, replace=False)] = 1
    observed = np.where(censored == 1, event_time * rng.uniform(0.15, 0.95, len(cases)), event_time)
    return pd.DataFrame({"case_id": cases["case_id"], "survival_months": np.maximum(np.round(observed, 1), 0.1),
                         "censorship": censored})


# ----------------------------------------------------------------------------- splits
def make_splits(seed: int, key: str, cases: list[str], strata: np.ndarray, n_folds: int,
                coverage: list[np.ndarray], val_fraction: float = 0.2, attempts: int = 200) -> list[dict[str, list[str]]]:
    """Patient-level, stratified train/val/test splits, one dict per fold.

    ``n_folds`` > 1: stratified k-fold test sets (each case in exactly one test set); 1: a
    stratified 25 % test set. Validation is a stratified ``val_fraction`` of the rest. Strata
    with a single case always stay in train. Among seeded attempts, the first in which every
    label in ``coverage`` has all of its classes in every fold's train set (and, for classes
    with at least ``n_folds`` cases, in every test set) is kept — else the best one.
    """
    rng = seeded_rng(seed, "splits", key)
    strata = np.asarray(strata)
    best: tuple[int, list[dict[str, list[str]]]] | None = None
    for _ in range(attempts):
        folds = _draw_folds(rng, strata, n_folds, val_fraction)
        problems = _coverage_problems(folds, coverage)
        if best is None or problems < best[0]:
            best = (problems, folds)
        if problems == 0:
            break
    assert best is not None
    return [{part: sorted(cases[i] for i in members) for part, members in fold.items()} for fold in best[1]]


def _draw_folds(rng: np.random.Generator, strata: np.ndarray, n_folds: int, val_fraction: float) -> list[dict[str, list[int]]]:
    n = len(strata)
    order = np.lexsort((rng.random(n), strata))  # cases grouped by stratum, random within
    values, counts = np.unique(strata, return_counts=True)
    single = set(values[counts < 2].tolist())
    dealt = [i for i in order if strata[i] not in single]
    period = n_folds if n_folds > 1 else 4
    offset = int(rng.integers(period))
    test_of = {case: (pos + offset) % period for pos, case in enumerate(dealt)}
    folds = []
    for fold in range(n_folds):
        test = [i for i in order if test_of.get(i, -1) == fold]
        rest = [i for i in order if test_of.get(i, -1) != fold]
        val = _pick_val(strata, rest, max(1, round(val_fraction * len(rest))))
        train = [i for i in rest if i not in set(val)]
        folds.append({"train": sorted(train), "val": sorted(val), "test": sorted(test)})
    return folds


def _pick_val(strata: np.ndarray, rest: list[int], n_val: int) -> list[int]:
    """``n_val`` cases spread evenly over the stratum-sorted ``rest``, never a stratum's last one.

    Only when every stratum is down to one case (tiny cohorts) does val take a stratum's only
    case, because an empty validation set would leave nothing for early stopping.
    """
    left = {value: int((strata[rest] == value).sum()) for value in set(strata[rest].tolist())}
    spread = [rest[int((j + 0.5) * len(rest) / n_val)] for j in range(n_val)]
    val: list[int] = []
    for case in [*spread, *(i for i in rest if i not in set(spread))]:
        if len(val) < n_val and left[strata[case]] > 1:
            val.append(case)
            left[strata[case]] -= 1
    return sorted(val) if val else spread[:1]


def _coverage_problems(folds: list[dict[str, list[int]]], coverage: list[np.ndarray]) -> int:
    problems = 0
    for labels in coverage:
        values, counts = np.unique(labels, return_counts=True)
        for fold in folds:
            problems += 1000 * len(set(values) - set(labels[fold["train"]].tolist()))
            wanted = set(values[counts >= len(folds)].tolist()) if len(folds) > 1 else set()
            problems += len(wanted - set(labels[fold["test"]].tolist()))
    return problems


def write_split_csv(path: Path, fold: dict[str, list[str]]) -> None:
    """``train,val,test`` columns of case ids, ragged columns padded with empty cells."""
    frame = pd.DataFrame({part: pd.Series(fold[part], dtype=object) for part in ("train", "val", "test")})
    _write_csv(frame, path)


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


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


def _run_all(jobs: list[SlideJob | TileJob], workers: int) -> list[tuple[SlideJob | TileJob, list[Path], np.ndarray | None]]:
    """Run jobs in ``workers`` forked processes (each job seeds itself: order does not matter)."""
    from threadpoolctl import threadpool_limits

    progress = {"total": len(jobs), "desc": "demo data", "unit": "job"}
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
    settings = DemoSettings.from_config(cfg)
    out = Path(settings.out_dir)
    done = out / "demo.done"
    classes, folds = task_facts(cfg)
    fingerprint = {"format": DEMO_FORMAT, "seed": cfg.seed, "classes": classes, "folds": folds,
                   **{k: v for k, v in asdict(settings).items() if k not in ("out_dir", "workers")}}
    previous = _read_manifest(done)
    if previous.get("fingerprint") == fingerprint and all((out / f).is_file() for f in previous.get("files", {})):
        log.info("demo data in %s is up to date", out)
        return done
    done.unlink(missing_ok=True)
    log.info("generating the demo cohort in %s (%d cases, %d workers)", out, settings.n_cases, settings.workers)

    slides = make_cohort(cfg.seed, settings)
    cases = slides.drop_duplicates("case_id").reset_index(drop=True)
    written = _write_tables(cfg.seed, out, slides, cases, classes, folds, settings.label_noise)
    jobs: list[SlideJob | TileJob] = [
        SlideJob(cfg.seed, row.slide_id, out / "slides" / f"{row.slide_id}.tiff", row.width, row.height,
                 settings.mpp, settings.jpeg_quality, bool(row.aperio), row.look)
        for row in slides.itertuples()
    ]
    jobs += plan_tile_jobs(cfg.seed, out / "tiles", {t: [str(c) for c in classes[t]] for t in classes},
                           settings.tile_images_per_class)
    pcam: dict[str, list[tuple[int, np.ndarray]]] = {}
    for job, paths, images in _run_all(jobs, settings.workers):
        written += paths
        if images is not None:
            pcam.setdefault(job.split, []).append((job.class_index, images))
    for split, parts in sorted(pcam.items()):
        written += write_pcam(out / "tiles", cfg.seed, split, parts)

    files = {str(p.relative_to(out)): _sha256(p) for p in sorted(written)}
    for stale in sorted(set(previous.get("files", {})) - set(files)):
        (out / stale).unlink(missing_ok=True)
    write_json({"fingerprint": fingerprint, "files": files}, done)
    log.info("demo data: %d slides of %d cases, %d files in %s", len(slides), len(cases), len(files), out)
    return done


def _write_tables(seed: int, out: Path, slides: pd.DataFrame, cases: pd.DataFrame, classes: dict[str, list[Any]],
                  folds: dict[str, int], noise: float) -> list[Path]:
    """Label tables (one row per slide), split CSVs and the hidden factors; return the paths."""
    written = []
    tables = make_labels(seed, cases, classes, noise)
    for stem, table in tables.items():
        path = out / "labels" / f"{stem}.csv"
        _write_csv(slides[["case_id", "slide_id"]].merge(table, on="case_id", how="left"), path)
        written.append(path)
    case_ids = cases["case_id"].tolist()
    for folder, n_folds in folds.items():
        table = tables[folder]
        if folder == "mutation":
            strata, coverage = table["tp53_mut"].to_numpy(), [table[c].to_numpy() for c in MUTATIONS]
        elif folder.startswith("surv_"):
            strata = table["censorship"].to_numpy()
            coverage = [strata]
        else:
            strata = table.iloc[:, 1].astype(str).to_numpy()
            coverage = [strata]
        for fold, split in enumerate(make_splits(seed, folder, case_ids, strata, n_folds, coverage)):
            if folder in VAL_EQUALS_TEST:
                split = {"train": split["train"] + split["val"], "val": split["test"], "test": split["test"]}
                split["train"].sort()
            path = out / "splits" / folder / f"splits_{fold}.csv"
            write_split_csv(path, split)
            written.append(path)
    path = out / "README.md"
    with atomic_path(path) as tmp:
        tmp.write_text(readme(len(cases), len(slides), noise))
    written.append(path)
    truth = slides[["case_id", "slide_id", *LATENT]].assign(
        **{f"look_{k}": [getattr(look, k) for look in slides["look"]] for k in asdict(TissueLook())})
    path = out / "truth" / "latent.csv"
    _write_csv(truth, path)
    return [*written, path]


def task_facts(cfg: Config) -> tuple[dict[str, list[Any]], dict[str, int]]:
    """Class lists of the tasks the demo labels, and fold counts per split folder.

    Both come from the config (task registry merged with ``task_data``), so the demo writes
    the classes and the ``splits_<fold>.csv`` files the experts stage will look for. A folder
    shared by several tasks (``mutation``) gets the most folds any of them asks for, counting
    only the tasks the run config gives data for when there are any.
    """
    label_tasks = [*CLASSIFICATION, "bracs_3", *(plan.task for plan in TILE_DATASETS)]
    classes = {task: list(cfg.task(task).classes) for task in label_tasks}
    sharing = {task: [task] for task in [*CLASSIFICATION, "bracs_3"]}
    sharing["mutation"] = list(MUTATION_TASKS)
    sharing.update({f"surv_{cohort}": [f"surv_{cohort}"] for cohort in SURVIVAL})
    configured = set(cfg.raw.get("task_data", {}))
    folds = {}
    for folder, tasks in sharing.items():
        chosen = [t for t in tasks if t in configured] or tasks
        folds[folder] = max(cfg.task(t).n_folds for t in chosen)
    return classes, folds


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

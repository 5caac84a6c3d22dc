"""The demo's patients and slides (latent factors, slide looks) and their labels."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from pathfuse.config import ConfigError, TaskSpec
from pathfuse.demo.design import (
    LATENT,
    CoarserClasses,
    Design,
    MutationColumn,
    RankedClasses,
    SurvivalTimes,
)
from pathfuse.demo.tiles import seeded_rng
from pathfuse.demo.tissue import TissueLook
from pathfuse.settings import DemoSettings

CASE_PREFIX = "DEMO"


def make_cohort(seed: int, settings: DemoSettings, prefix: str = CASE_PREFIX, stream: str = "cohort") -> pd.DataFrame:
    """One row per slide: case_id, slide_id, the case's latent factors and the slide's look.

    ``prefix`` and ``stream`` name another cohort drawn the same way (the demo's external cohort).
    """
    rng = seeded_rng(seed, stream)
    n = settings.n_cases
    latent = rng.standard_normal((n, len(LATENT)))
    n_two = round(settings.two_slide_fraction * n)
    two_slides = set(rng.choice(n, size=n_two, replace=False).tolist())
    rows = []
    for i in range(n):
        case_id = f"{prefix}-{i + 1:04d}"
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
    slides["look"] = pd.Series(looks, index=slides.index, dtype=object)
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


def make_labels(seed: int, cases: pd.DataFrame, designs: Mapping[str, Design], tasks: Mapping[str, TaskSpec],
                noise: float) -> dict[str, pd.DataFrame]:
    """Case-level label tables keyed by file stem (``case_id`` plus the task's columns).

    Each task's labels come from its design (:mod:`pathfuse.demo.design`) and go to the columns
    its registry entry names; every score is seeded by its task, never by the order of tasks.
    """
    tables: dict[str, pd.DataFrame] = {}
    class_index: dict[str, np.ndarray] = {}
    shared: dict[str, dict[str, Any]] = {}
    for task_id, design in designs.items():
        task = tasks[task_id]
        if isinstance(design, RankedClasses):
            n_classes = len(task.classes)
            score = _score(seed, cases, design.weights, noise, task_id)
            class_index[task_id] = _rank_classes(score, design.proportions or (1.0 / n_classes,) * n_classes)
            tables[task_id] = _class_table(cases, task, class_index[task_id])
        elif isinstance(design, MutationColumn):
            positives = max(2, round(design.prevalence * len(cases)))
            column = str(task.label_column)
            proportions = (1 - positives / len(cases), positives / len(cases))
            shared.setdefault(design.table, {"case_id": cases["case_id"]})[column] = _rank_classes(
                _score(seed, cases, design.weights, noise, column), proportions)
        elif isinstance(design, SurvivalTimes):
            tables[task_id] = _survival(seed, cases, design.weights, noise, task_id.removeprefix("surv_"), task)
    for task_id, design in designs.items():  # after their sources
        if isinstance(design, CoarserClasses):
            task, n_source = tasks[task_id], len(tasks[design.source].classes)
            if n_source != len(design.mapping) or len(task.classes) != max(design.mapping) + 1:
                raise ConfigError(f"the demo maps {design.source}'s {len(design.mapping)} classes onto {task_id}'s "
                                  f"{max(design.mapping) + 1}; the task registry differs")
            tables[task_id] = _class_table(cases, task, np.asarray(design.mapping)[class_index[design.source]])
    tables.update({stem: pd.DataFrame(columns) for stem, columns in shared.items()})
    return tables


def _class_table(cases: pd.DataFrame, task: TaskSpec, index: np.ndarray) -> pd.DataFrame:
    """A task's label table: each case's class (``task.classes[index]``) in its label column."""
    return pd.DataFrame({"case_id": cases["case_id"], str(task.label_column): [task.classes[i] for i in index]})


def _survival(seed: int, cases: pd.DataFrame, weights: tuple[float, ...], noise: float, cohort: str,
              task: TaskSpec) -> pd.DataFrame:
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
    return pd.DataFrame({"case_id": cases["case_id"],
                         str(task.time_column): np.maximum(np.round(observed, 1), 0.1),
                         str(task.censorship_column): censored})


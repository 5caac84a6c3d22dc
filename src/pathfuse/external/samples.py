"""The samples of an external cohort: its slides with features of the experts that can predict it.

An external cohort is read like the task's own cohort (same label columns, same bag unit), but it
is never split: every sample is predicted by every fold's model. Without a label table (``pathfuse
predict`` on new slides) each slide is one sample with no label.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from pathfuse.config import Config, TaskSpec
from pathfuse.data.availability import slide_availability
from pathfuse.data.labels import PATIENTS_KEY, SAMPLE_COLUMNS, load_samples
from pathfuse.encoders.sources import external_encoders


@dataclass
class ExternalCohort:
    """One external cohort of a task: which experts have features of it, and its samples."""

    task: TaskSpec  # the task with the external cohort, its labels and the experts that can predict it
    cohort: str
    labelled: bool
    samples: pd.DataFrame
    missing: dict[str, str]  # encoder → why its expert cannot predict this cohort


def external_labels(task: TaskSpec, cohort: str) -> str | None:
    """The label table ``task_data.<task>.external`` gives ``cohort`` (None: unlabelled or not listed)."""
    return next((x.labels for x in task.external if x.cohort == cohort), None)


def external_cohort(cfg: Config, task: TaskSpec, cohort: str) -> ExternalCohort:
    """The external cohort's samples on the encoders it has (features of every one of those)."""
    if not task.is_slide_task:
        raise ValueError(f"task {task.id}: external cohorts are for slide tasks; {task.kind} has tile datasets")
    have = external_encoders(cfg, task, cohort)
    missing = {e: f"cohort {cohort!r} has no features of encoder {e} (features-only cohort without a "
                  f"source for it)" for e in task.encoders if e not in have}
    if not have:
        raise ValueError(f"task {task.id}: cohort {cohort!r} has features of none of its encoders "
                         f"({', '.join(task.encoders)})")
    labels = external_labels(task, cohort)
    spec = replace(task, cohort=cohort, labels=labels, encoders=tuple(have), external=())
    samples = load_samples(cfg, spec, have[0]) if labels else unlabelled_samples(cfg, spec)
    return ExternalCohort(spec, cohort, labels is not None, samples, missing)


def unlabelled_samples(cfg: Config, task: TaskSpec) -> pd.DataFrame:
    """Every slide with features of all the task's encoders, one sample each, without labels."""
    available = slide_availability(cfg, task)
    ids = sorted(available.usable)
    out = pd.DataFrame({"sample_id": ids, "patient_id": ids, "slide_ids": [[s] for s in ids],
                        "label": np.full(len(ids), -1, dtype=np.int64), "time": np.full(len(ids), np.nan),
                        "event": np.full(len(ids), -1, dtype=np.int8)})[list(SAMPLE_COLUMNS)]
    dropped: dict[str, dict[str, Any]] = {}
    for slide, reason in sorted(available.left_out.items()):
        entry = dropped.setdefault(reason, {"n": 0, "ids": []})
        entry["n"] += 1
        entry["ids"].append(slide)
    out.attrs["dropped"] = dropped
    out.attrs[PATIENTS_KEY] = {"unit": "slide", "source": "no label table: each slide", "note": ""}
    return out

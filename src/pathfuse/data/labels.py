"""Samples of a task: one row per bag (slide or patient) or tile, with its label, checked.

Slide tasks join the task's label table (CSV) with the slides that have features of **every**
encoder of the task (:mod:`pathfuse.data.availability`), so every expert, fuser and score of a
task sees the same samples. Slides left out — skipped at tiling, an empty or unusable bag, no
bag for one encoder, labelled but absent from the cohort, unlabelled — are recorded with their
reasons (``DataFrame.attrs["dropped"]``, copied into the predictions' metadata and the report's
left-out table). Everything wrong with the label *values* — unknown classes, missing labels, NaN
or negative times, censorship other than 0/1 — stops the run with an error naming the task, the
file and the samples, unless ``experts.on_bad_input: skip`` says to drop and record them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TypedDict

import numpy as np
import pandas as pd

from pathfuse.config import Config, TaskSpec
from pathfuse.data.availability import slide_availability, tile_availability
from pathfuse.data.tiles import load_tile_index
from pathfuse.encoders.tile_groups import GROUP_SOURCE_KEY, NO_GROUP

log = logging.getLogger(__name__)

SAMPLE_COLUMNS = ("sample_id", "patient_id", "slide_ids", "label", "time", "event")
#: ``DataFrame.attrs`` key (and predictions-metadata key) of what a task's ``patient_id`` is:
#: ``unit`` (patient, slide, group or tile), ``source`` and a ``note`` for the tables ("" if none).
PATIENTS_KEY = "patients"


class LabelError(ValueError):
    """The labels of a task are unusable; the message names task, file, samples and the fix."""


def load_samples(cfg: Config, task: TaskSpec, encoder: str) -> pd.DataFrame:
    """One row per sample of ``task`` with features of every task encoder, sorted by sample id.

    ``encoder`` is whose tile-feature rows a tile task's ``row`` column points into.

    Columns: ``sample_id``, ``patient_id``, ``slide_ids`` (list; empty for tile tasks),
    ``label`` (class index; −1 for survival), ``time`` (NaN unless survival), ``event``
    (1 observed / 0 censored; −1 unless survival); tile tasks add ``row`` (feature row) and
    ``official_split``. ``attrs["dropped"]`` = {reason: {"n", "ids"}}; ``attrs["patients"]`` says
    what ``patient_id`` stands for (:data:`PATIENTS_KEY`): splits and the bootstrap treat one
    patient_id as one unit, so a table without patients must say so.
    """
    policy = cfg.settings.experts.on_bad_input
    if task.is_slide_task:
        return _slide_samples(cfg, task, encoder, policy)
    return _tile_samples(cfg, task, encoder, policy)


# ----------------------------------------------------------------------------- helpers
def normalise_value(value: object) -> str:
    """Label cells and registry classes compared as text: 1, 1.0 and "1" are the same class."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() else text


def _class_index(task: TaskSpec) -> dict[str, int]:
    return {normalise_value(c): i for i, c in enumerate(task.classes)}


class DroppedSamples(TypedDict):
    """The samples dropped for one reason (a dict, as it goes into the outputs' JSON metadata)."""

    n: int
    ids: list[str]


class _Drops:
    """Collects dropped samples per reason; raises for reasons the policy does not allow."""

    def __init__(self, task: TaskSpec, policy: str, source: str) -> None:
        self.task, self.policy, self.source = task, policy, source
        self.dropped: dict[str, DroppedSamples] = {}

    def record(self, reason: str, ids: Iterable[str]) -> None:
        ids = sorted(set(map(str, ids)))
        if ids:
            entry = self.dropped.setdefault(reason, {"n": 0, "ids": []})
            entry["ids"] = sorted(set(entry["ids"]) | set(ids))
            entry["n"] = len(entry["ids"])
            log.warning("task %s: dropped %d sample(s): %s", self.task.id, len(ids), reason)

    def bad(self, problem: str, ids: Iterable[str], fix: str) -> None:
        """A data error: raise (policy fail) or drop and record (policy skip)."""
        ids = sorted(set(map(str, ids)))
        if not ids:
            return
        if self.policy != "skip":
            shown = ", ".join(ids[:10]) + (f" … ({len(ids)} in all)" if len(ids) > 10 else "")
            raise LabelError(
                f"task {self.task.id}: {problem} in {self.source}: {shown}. {fix}, or set "
                "experts.on_bad_input: skip to drop them (recorded in the predictions' metadata)"
            )
        self.record(problem, ids)


def _read_label_table(task: TaskSpec) -> pd.DataFrame:
    path = Path(task.labels or "")
    if not path.is_file():
        raise FileNotFoundError(f"task {task.id}: label table {path} not found (task_data.{task.id}.labels)")
    table = pd.read_csv(path, dtype=str, keep_default_na=True)
    table.columns = [c.strip() for c in table.columns]
    needed = ["slide_id", *task.kind_strategy.label_columns(task)]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise LabelError(
            f"task {task.id}: label table {path} lacks column(s) {missing}; it has {list(table.columns)}"
        )
    table["slide_id"] = table["slide_id"].str.strip()
    if "case_id" in table:
        table["patient_id"] = table["case_id"].str.strip().fillna(table["slide_id"])
        table.attrs[PATIENTS_KEY] = {"unit": "patient", "source": f"case_id of {path}", "note": ""}
    else:
        note = (f"label table {path} has no case_id column: every slide is its own patient (slides of one "
                "patient may fall on both sides of a split, and the bootstrap resamples slides)")
        log.warning("task %s: %s", task.id, note)
        table["patient_id"] = table["slide_id"]
        table.attrs[PATIENTS_KEY] = {"unit": "slide", "source": f"slide_id of {path}", "note": note}
    return table


def _parse_labels(task: TaskSpec, table: pd.DataFrame, drops: _Drops) -> pd.DataFrame:
    """Add label / time / event columns (time-to-event kinds: times, else classes); bad rows raise or are dropped."""
    if task.kind_strategy.time_to_event:
        return _parse_times(task, table, drops)
    return _parse_classes(task, table, drops)


def _parse_times(task: TaskSpec, table: pd.DataFrame, drops: _Drops) -> pd.DataFrame:
    """Time and event (1 − censorship) per row; ``label`` is −1."""
    time = pd.to_numeric(table[task.time_column], errors="coerce")
    cens = pd.to_numeric(table[task.censorship_column], errors="coerce")
    drops.bad(
        f"missing, non-numeric or negative {task.time_column!r}",
        table.loc[time.isna() | (time < 0), "slide_id"],
        "Fix the times",
    )
    drops.bad(
        f"{task.censorship_column!r} not 0 or 1 (1 = censored)",
        table.loc[~cens.isin([0, 1]), "slide_id"],
        "Fix the censorship values",
    )
    table = table.assign(label=-1, time=time.astype(float), event=(1 - cens).astype("Int8"))
    return table[~(time.isna() | (time < 0) | ~cens.isin([0, 1]))].astype({"event": "int8"})


def _parse_classes(task: TaskSpec, table: pd.DataFrame, drops: _Drops) -> pd.DataFrame:
    """The class index per row (the registry's classes); ``time`` NaN and ``event`` −1."""
    index = _class_index(task)
    raw = table[task.label_column]
    drops.bad(f"missing {task.label_column!r} label", table.loc[raw.isna(), "slide_id"], "Fill in the labels")
    table = table[raw.notna()]
    label = table[task.label_column].map(lambda v: index.get(normalise_value(v), -1))
    unknown = table.loc[label < 0]
    if len(unknown):
        values = sorted(set(unknown[task.label_column].map(normalise_value)))
        drops.bad(
            f"unknown class(es) {values} (the registry's classes are {list(task.classes)})",
            unknown["slide_id"],
            "Fix the labels or the task's classes in the task registry",
        )
    return table.assign(label=label.astype(np.int64), time=np.nan, event=np.int8(-1))[label >= 0]


def _slide_samples(cfg: Config, task: TaskSpec, encoder: str, policy: str) -> pd.DataFrame:
    table = _read_label_table(task)
    patients = table.attrs[PATIENTS_KEY]
    drops = _Drops(task, policy, str(task.labels))
    conflicts = table.drop_duplicates().groupby("slide_id").size()
    if (conflicts > 1).any():
        raise LabelError(
            f"task {task.id}: slide(s) listed twice with different values in {task.labels}: "
            f"{sorted(conflicts[conflicts > 1].index)[:10]}"
        )
    labelled = set(table["slide_id"].dropna())
    table = _parse_labels(task, table.drop_duplicates("slide_id"), drops)
    available = slide_availability(cfg, task)
    slides = table["slide_id"]
    if table.empty or not slides.isin(list(available.usable)).any():
        raise LabelError(
            f"task {task.id}: no labelled slide of {task.labels} has features of every encoder "
            f"({', '.join(task.encoders)}) in cohort {task.cohort!r} (label slide ids e.g. {list(slides[:3])}, "
            f"cohort ids e.g. {sorted(available.known)[:3]}); check that slide_id matches the slide file stems"
        )
    reason_of = slides.map(available.left_out)
    for reason in sorted(set(available.left_out.values())):
        drops.record(reason, slides[reason_of == reason])
    drops.record(f"labelled, but no slide of cohort {task.cohort!r} has this id (no features of any encoder)",
                 slides[~slides.isin(list(available.known))])
    drops.record("unlabelled: not in the label table", sorted(available.usable - labelled))
    table = table[slides.isin(list(available.usable))]
    unit = cfg.settings.experts.bag_unit
    samples = (
        _per_patient(task, table, drops)
        if unit == "patient"
        else table.assign(sample_id=table["slide_id"], slide_ids=table["slide_id"].map(lambda s: [s]))
    )
    out = samples[list(SAMPLE_COLUMNS)].sort_values("sample_id").reset_index(drop=True)
    out.attrs["dropped"] = drops.dropped
    out.attrs[PATIENTS_KEY] = patients
    return out


def _per_patient(task: TaskSpec, table: pd.DataFrame, drops: _Drops) -> pd.DataFrame:
    """One bag per patient: all of its slides; its slides must agree on the label."""
    keys = list(task.kind_strategy.target_columns)
    disagree = table.groupby("patient_id")[keys].nunique().max(axis=1) > 1
    drops.bad(
        "patient(s) whose slides carry different labels (bag_unit: patient needs one label per patient)",
        disagree[disagree].index,
        "Use experts.bag_unit: slide",
    )
    table = table[~table["patient_id"].isin(disagree[disagree].index)]
    grouped = table.sort_values("slide_id").groupby("patient_id", sort=True)
    out = grouped[keys].first().reset_index()
    out["slide_ids"] = grouped["slide_id"].agg(list).to_numpy()
    out["sample_id"] = out["patient_id"]
    for col, fill in (("label", -1), ("time", np.nan), ("event", -1)):
        if col not in out:
            out[col] = fill
    return out.astype({"label": np.int64, "event": np.int8})


def _tile_samples(cfg: Config, task: TaskSpec, encoder: str, policy: str) -> pd.DataFrame:
    index = load_tile_index(cfg, task, encoder)
    source = str(cfg.layout.tile_feature_index(encoder, task.dataset or ""))
    drops = _Drops(task, policy, source)
    classes = _class_index(task)
    label = index["label"].map(lambda v: classes.get(normalise_value(v), -1))
    unknown = index.loc[label < 0]
    if len(unknown):
        values = sorted(set(unknown["label"].map(normalise_value)))
        drops.bad(
            f"unknown class(es) {values} (the registry's classes are {list(task.classes)})",
            unknown["sample_id"],
            "Fix the dataset's class folders or the task's classes",
        )
    dup = index["sample_id"].duplicated(keep=False)
    if dup.any():
        raise LabelError(
            f"task {task.id}: duplicate sample_id(s) in {source}: {sorted(index.loc[dup, 'sample_id'])[:10]}"
        )
    group = index["group"].astype(str).where(index["group"].astype(str) != "", index["sample_id"].astype(str))
    group_source = index.attrs.get(GROUP_SOURCE_KEY, NO_GROUP)
    out = pd.DataFrame(
        {
            "sample_id": index["sample_id"].astype(str),
            "patient_id": group,
            "slide_ids": [[] for _ in range(len(index))],
            "label": label.astype(np.int64),
            "time": np.nan,
            "event": np.int8(-1),
            "row": index["row"].astype(np.int64),
            "official_split": index["split"],
        }
    )[label >= 0]
    if len(task.encoders) > 1:  # every encoder's index holds the tile (an import may drop NaN rows)
        available = tile_availability(cfg, task)
        for reason in sorted(set(available.left_out.values())):
            drops.record(reason, [t for t, r in available.left_out.items() if r == reason])
        out = out[out["sample_id"].isin(list(available.usable))]
    out = out.sort_values("sample_id").reset_index(drop=True)
    out.attrs["dropped"] = drops.dropped
    out.attrs[PATIENTS_KEY] = _tile_patients(task, group_source)
    return out


def _tile_patients(task: TaskSpec, group_source: str) -> dict[str, str]:
    """What a tile task's patient_id is: the dataset's patient/slide group, or the tile itself."""
    if group_source != NO_GROUP:
        return {"unit": "group", "source": group_source, "note": ""}
    return {"unit": "tile", "source": NO_GROUP,
            "note": (f"tile dataset {task.dataset} has no patient/slide group: splits and bootstrap CIs are "
                     f"per tile (set tile_datasets.{task.dataset}.groups or group_pattern)")}

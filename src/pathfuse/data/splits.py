"""Cross-validation folds of a task, always at patient level, from the task's split source.

Sources (``task.split["source"]``):

* ``csv``: published split files, one per fold (``task.splits`` with ``{fold}``), columns
  ``train,val,test`` listing case or slide ids (ragged; extra columns such as ``train_label``
  are ignored).
* ``kfold``: generated patient-level stratified k-fold (``n_folds``, seeded); validation is
  carved from the training part.
* ``official``: tile datasets' own ``train``/``val``/``test`` column; validation is carved
  from train if the dataset has none.
* ``holdout``: one stratified patient-level train/test split per fold (``test_fraction``).

Several published splits have val identical to test; tuning on it would be tuning on the test
set. Such a fold is refused, or with ``experts.carve_val: true`` a stratified validation set
is carved from train and the fold records ``carve_val = True``. Folds depend on the seed,
task and fold only — never on the encoder — so every expert of a task sees the same folds.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pathfuse.config import Config, TaskSpec
from pathfuse.reproducibility import derive_seed

log = logging.getLogger(__name__)


#: The left-out reason of samples that no fold's split lists.
UNSPLIT = "in no split of any fold"


class SplitError(ValueError):
    """A split is unusable (val == test, patient leakage, unknown ids); the message says how to fix it."""


@dataclass(frozen=True)
class Fold:
    """One outer fold: sample ids per split, and whether validation was carved from train."""

    index: int
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    carve_val: bool = False
    source: str = ""


def make_folds(cfg: Config, task: TaskSpec, samples: pd.DataFrame) -> list[Fold]:
    """The outer folds of ``task`` over ``samples`` (from :func:`pathfuse.data.labels.load_samples`)."""
    source = task.split.get("source")
    if source == "csv":
        folds = [_csv_fold(cfg, task, samples, k) for k in range(task.n_folds)]
    elif source == "kfold":
        folds = _kfold(cfg, task, samples)
    elif source == "official":
        folds = [_official_fold(cfg, task, samples)]
    elif source == "holdout":
        folds = [_holdout_fold(cfg, task, samples, k) for k in range(task.n_folds)]
    else:
        raise SplitError(f"task {task.id}: unknown split source {source!r}")
    for fold in folds:
        _check_disjoint(task, samples, fold)
    return folds


def record_unsplit(samples: pd.DataFrame, folds: Sequence[Fold]) -> None:
    """Record in ``samples.attrs["dropped"]`` the samples no fold uses (listed in no split file).

    They get no prediction from any expert or fuser, so every method is scored without them; the
    report's left-out table names them.
    """
    used: set[str] = set()
    for fold in folds:
        used |= set(fold.train) | set(fold.val) | set(fold.test)
    unsplit = sorted(set(samples["sample_id"].astype(str)) - used)
    if unsplit:
        samples.attrs.setdefault("dropped", {})[UNSPLIT] = {"n": len(unsplit), "ids": unsplit}


def patient_kfold(samples: pd.DataFrame, k: int, seed: int,
                  stratify_by: str) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """Patient-level stratified k-fold partitions of ``samples``: [(fit ids, held-out ids)] × k.

    Used for the generated outer folds and for the inner folds that give out-of-fold
    predictions; every sample is held out exactly once and never trains the model that
    predicts it. ``stratify_by``: the sample column of the strata (the task kind's
    ``stratify_by``: the class, or the event indicator).
    """
    patients = samples.groupby("patient_id", sort=True).first()
    if len(patients) < k:
        raise SplitError(f"{k}-fold split needs at least {k} patients, got {len(patients)}")
    strata = patients[stratify_by].to_numpy()
    rng = np.random.default_rng(seed)
    fold_of: dict[str, int] = {}
    dealt = 0
    for value in np.unique(strata):  # shuffle each stratum's patients and deal them round-robin
        for patient in rng.permutation(patients.index[strata == value].to_numpy()):
            fold_of[patient] = dealt % k
            dealt += 1
    assigned = samples["patient_id"].map(fold_of).to_numpy()
    ids = samples["sample_id"].to_numpy()
    return [(tuple(sorted(ids[assigned != j])), tuple(sorted(ids[assigned == j]))) for j in range(k)]


def carve(
    samples: pd.DataFrame, ids: Sequence[str], fraction: float, seed: int, stratify_by: str
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split ``ids`` into (rest, carved) by patient, stratified by ``stratify_by`` (class/event) where possible."""
    part = samples[samples["sample_id"].isin(list(ids))]
    patients = part.groupby("patient_id", sort=True).first()
    strata = patients[stratify_by].to_numpy()
    rng = np.random.default_rng(seed)
    n_carve = max(1, round(fraction * len(patients)))
    if len(patients) < 2:
        raise SplitError(f"cannot carve a validation set from {len(patients)} patient(s)")
    values, sizes = np.unique(strata, return_counts=True)
    quota = n_carve * sizes / len(patients)  # proportional, largest remainders round up
    take = np.floor(quota).astype(int)
    take[np.argsort(take - quota, kind="stable")[: n_carve - take.sum()]] += 1
    take = np.minimum(take, np.maximum(sizes - 1, 0))  # every stratum keeps a training patient
    chosen: list[str] = []
    for value, k in zip(values, take, strict=True):
        chosen.extend(rng.choice(patients.index[strata == value].to_numpy(), size=k, replace=False))
    if not chosen:
        chosen = list(rng.choice(patients.index.to_numpy(), size=1, replace=False))
    carved = set(part.loc[part["patient_id"].isin(chosen), "sample_id"])
    return tuple(sorted(set(ids) - carved)), tuple(sorted(carved))


# ----------------------------------------------------------------------------- sources
def _resolve_ids(samples: pd.DataFrame) -> dict[str, set[str]]:
    """Any id a split file may use (patient, sample or slide id) → sample ids."""
    lookup: dict[str, set[str]] = {}
    for patient_id, sample_id, slide_ids in zip(samples["patient_id"], samples["sample_id"], samples["slide_ids"],
                                                strict=True):
        for key in (patient_id, sample_id, *slide_ids):
            lookup.setdefault(str(key), set()).add(sample_id)
    return lookup


def _csv_fold(cfg: Config, task: TaskSpec, samples: pd.DataFrame, k: int) -> Fold:
    path = Path((task.splits or "").format(fold=k))
    if not path.is_file():
        raise FileNotFoundError(
            f"task {task.id}: split file of fold {k} not found: {path} (task_data.{task.id}.splits)"
        )
    table = pd.read_csv(path, dtype=str)
    table.columns = [c.strip() for c in table.columns]
    if "train" not in table or "test" not in table:
        raise SplitError(
            f"task {task.id}: split file {path} needs columns train and test (val optional); "
            f"it has {list(table.columns)}"
        )
    lookup = _resolve_ids(samples)
    parts, unmatched = {}, []
    for name in ("train", "val", "test"):
        listed = table[name].dropna().str.strip() if name in table else pd.Series(dtype=str)
        listed = listed[listed != ""]
        unmatched += [i for i in listed if i not in lookup]
        parts[name] = {s for i in listed for s in lookup.get(i, ())}
    if unmatched:
        log.warning(
            "task %s fold %d: %d id(s) of %s match no sample with features (e.g. %s); they are left out",
            task.id,
            k,
            len(unmatched),
            path,
            unmatched[:5],
        )
    unassigned = set(samples["sample_id"]) - parts["train"] - parts["val"] - parts["test"]
    if unassigned:
        log.warning(
            "task %s fold %d: %d sample(s) are in no split of %s and are not used in this fold",
            task.id,
            k,
            len(unassigned),
            path,
        )
    return _with_validation(cfg, task, samples, k, parts, source=str(path))


def _with_validation(
    cfg: Config,
    task: TaskSpec,
    samples: pd.DataFrame,
    k: int,
    parts: dict[str, set[str]],
    source: str,
) -> Fold:
    """Apply the val == test rule and carve validation when needed."""
    train, val, test = parts["train"], parts.get("val", set()), parts["test"]
    if not test or not train:
        raise SplitError(
            f"task {task.id} fold {k}: empty {'test' if not test else 'train'} split in {source}"
        )
    carved = False
    if val and val == test:
        if not cfg.settings.experts.carve_val:
            raise SplitError(
                f"task {task.id} fold {k}: validation set equals the test set in {source}; early "
                "stopping on it would tune on the test set. Set experts.carve_val: true to carve a "
                "stratified validation set out of train instead (recorded as carve_val in the outputs)"
            )
        log.warning("task %s fold %d: val == test in %s; carving validation from train", task.id, k, source)
        val = set()
    if not val:
        seed = derive_seed(cfg.seed, task.id, "carve_val", k)
        rest, val_ids = carve(samples, sorted(train), float(cfg.settings.experts.val_fraction), seed,
                              task.kind_strategy.stratify_by)
        train, val, carved = set(rest), set(val_ids), True
    return Fold(
        index=k,
        train=tuple(sorted(train)),
        val=tuple(sorted(val)),
        test=tuple(sorted(test)),
        carve_val=carved,
        source=source,
    )


def _kfold(cfg: Config, task: TaskSpec, samples: pd.DataFrame) -> list[Fold]:
    seed = derive_seed(cfg.seed, task.id, "kfold")
    try:
        partitions = patient_kfold(samples, task.n_folds if task.split.get("n_folds") else 5, seed,
                                   task.kind_strategy.stratify_by)
    except SplitError as err:
        raise SplitError(f"task {task.id}: {err}") from None
    return [
        _with_validation(cfg, task, samples, k, {"train": set(fit), "test": set(held)}, "kfold")
        for k, (fit, held) in enumerate(partitions)
    ]


def _official_fold(cfg: Config, task: TaskSpec, samples: pd.DataFrame) -> Fold:
    if "official_split" not in samples:
        raise SplitError(f"task {task.id}: split source 'official' is for tile datasets with a split column")
    by_split = {
        name: set(samples.loc[samples["official_split"] == name, "sample_id"])
        for name in ("train", "val", "test")
    }
    if not by_split["test"]:
        raise SplitError(
            f"task {task.id}: dataset {task.dataset!r} has no 'test' tiles; use split source "
            "'holdout' (with test_fraction) in the task registry"
        )
    return _with_validation(cfg, task, samples, 0, by_split, f"official split of {task.dataset}")


def _holdout_fold(cfg: Config, task: TaskSpec, samples: pd.DataFrame, k: int) -> Fold:
    fraction = float(task.split.get("test_fraction", 0.2))
    rest, test = carve(samples, list(samples["sample_id"]), fraction, derive_seed(cfg.seed, task.id, "holdout", k),
                       task.kind_strategy.stratify_by)
    return _with_validation(
        cfg, task, samples, k, {"train": set(rest), "test": set(test)}, "holdout"
    )


def _check_disjoint(task: TaskSpec, samples: pd.DataFrame, fold: Fold) -> None:
    """No patient may sit in two splits of a fold (slides of one case leaking train → test)."""
    patient = samples.set_index("sample_id")["patient_id"]
    sets = {name: set(patient.loc[list(getattr(fold, name))]) for name in ("train", "val", "test")}
    for a, b in (("train", "test"), ("train", "val"), ("val", "test")):
        shared = sets[a] & sets[b]
        if shared:
            raise SplitError(
                f"task {task.id} fold {fold.index}: patient(s) {sorted(shared)[:10]} are in both {a} and {b} "
                f"({fold.source}); splits must be per patient — fix the split file"
            )

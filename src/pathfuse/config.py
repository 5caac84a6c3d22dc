"""Run configuration: validation against the JSON Schemas, defaults, and typed views.

The same validated dict drives Snakemake (the Snakefile calls :func:`validate_config`) and
every library function (``Config.from_dict``), so a ``--config key=value`` override reaches
every stage. A bad key or value stops the run with a message naming the key path, the bad
value and what is allowed — before any job starts.

This module is the public entry: :class:`Config` and the cross-reference checks live here, the
schema validation and its messages in :mod:`pathfuse.config_schema`, the task, cohort and tile
dataset views in :mod:`pathfuse.specs`; every name is importable from here.
"""

from __future__ import annotations

import copy
import glob
import math
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

from pathfuse import resources
from pathfuse.bag_folders import shared_slide_ids
from pathfuse.config_schema import (
    STAGE_SECTIONS,
    ConfigError,
    config_schema,
    fill_defaults,
    load_yaml,
    section_settings,
    validate,
)
from pathfuse.kinds import KINDS, get_kind
from pathfuse.paths import Layout
from pathfuse.settings import RunSettings, TaskDataSettings
from pathfuse.specs import CohortSpec, TaskSpec, TileDatasetSpec

TASK_KINDS = tuple(KINDS.names())  # built-in and plug-in kinds (pathfuse.kinds)
SLIDE_KINDS = tuple(k for k in TASK_KINDS if KINDS.get(k).slide)

#: The public entry: the rest of the code base imports these from here.
__all__ = [
    "SLIDE_KINDS", "STAGE_SECTIONS", "TASK_KINDS", "CohortSpec", "Config", "ConfigError", "TaskSpec",
    "TileDatasetSpec", "config_schema", "count_slides", "fill_defaults", "load_yaml", "section_settings",
    "validate", "validate_config",
]


def validate_config(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a run config, fill defaults, and check cross-references against the registries.

    Returns the completed dict (the input is not modified). This is what the Snakefile runs at
    start-up, so an error here stops the workflow before any job.
    """
    cfg = fill_defaults(copy.deepcopy(dict(raw)), config_schema())
    validate(cfg, config_schema(), "config")
    Config(cfg)._check_references()
    return cfg


class Config:
    """Read-only typed view over a validated run config and the registries it names.

    :attr:`settings` is the typed config (``cfg.settings.experts.n_seeds``); :attr:`raw` is the
    validated dict it is built from (the job plan hashes its sections for the settings digests).
    """

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.raw: dict[str, Any] = dict(raw)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Config:
        """Validate (filling defaults) and wrap a config dict, e.g. ``snakemake.config``."""
        return cls(validate_config(raw))

    @classmethod
    def from_file(cls, path: str | Path, overrides: Mapping[str, Any] | None = None) -> Config:
        """Load a run config YAML, apply dotted-key ``overrides``, validate and wrap it."""
        raw = load_yaml(path) or {}
        for dotted, value in (overrides or {}).items():
            node = raw
            *parents, last = dotted.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = value
        return cls.from_dict(raw)

    # -- basics
    @property
    def seed(self) -> int:
        """The run's master seed; every job derives its own seeds from it."""
        return self.settings.seed

    @cached_property
    def layout(self) -> Layout:
        """Where every output of the run lives, under ``results_dir``."""
        return Layout(Path(self.settings.results_dir))

    @cached_property
    def settings(self) -> RunSettings:
        """The typed settings, built once from the validated, default-filled dict."""
        return RunSettings.model_validate(self.raw)

    def section(self, name: str) -> dict[str, Any]:
        """A stage's settings as a dict (defaults filled from its schema section).

        Library code reads :attr:`settings` (``cfg.settings.fusion.methods``); this raw form is
        for the job plan's settings digests, which hash exactly what the config holds.
        """
        return dict(self.raw.get(name, {}))

    # -- registries
    def registry_path(self, name: str) -> Path:
        """The run's ``tasks`` or ``encoders`` registry: ``registries.<name>``, else the packaged one."""
        given = getattr(self.settings.registries, name)
        return Path(given) if given else resources.registry(name)

    @cached_property
    def task_registry(self) -> dict[str, dict[str, Any]]:
        """The task registry, validated once; plug-in task kinds count as known kinds."""
        path = self.registry_path("tasks")
        reg = load_yaml(path)
        schema = load_yaml(resources.schema("tasks"))
        schema["additionalProperties"]["properties"]["kind"]["enum"] = KINDS.names()  # plug-in kinds too
        validate(reg, schema, f"task registry {path}")
        return reg

    @cached_property
    def encoder_registry(self) -> dict[str, dict[str, Any]]:
        """The encoder registry, validated once."""
        path = self.registry_path("encoders")
        reg = load_yaml(path)
        validate(reg, load_yaml(resources.schema("encoders")), f"encoder registry {path}")
        return reg

    # -- selections
    @cached_property
    def task_ids(self) -> list[str]:
        """Tasks of this run, in registry order for "all", else in the order given."""
        if self.settings.tasks == "all":
            return [t for t, spec in self.task_registry.items() if spec.get("lp22")]
        return list(self.settings.tasks)

    @property
    def fusion_methods(self) -> list[str]:
        """The run's fusion methods and baselines (``fusion.methods``), in config order."""
        return list(self.settings.fusion.methods)

    @property
    def encoder_ids(self) -> list[str]:
        """The run's encoders (``encoders``), in config order; tasks may use a subset."""
        return list(self.settings.encoders)

    def encoder_entry(self, name: str) -> dict[str, Any]:
        """The encoder registry entry for ``name`` (the encoders package builds from it)."""
        try:
            return dict(self.encoder_registry[name])
        except KeyError:
            raise ConfigError(
                f"encoder {name!r} is not in {self.registry_path('encoders')}; "
                f"known: {sorted(self.encoder_registry)}"
            ) from None

    def task(self, task_id: str) -> TaskSpec:
        """The merged spec of one task."""
        if task_id not in self.task_registry:
            raise ConfigError(
                f"task {task_id!r} is not in {self.registry_path('tasks')}; "
                f"known: {sorted(self.task_registry)}"
            )
        reg = self.task_registry[task_id]
        data = self.settings.task_data.get(task_id) or TaskDataSettings()
        split = dict(reg.get("split", {}))
        if data.n_folds is not None:
            split["n_folds"] = data.n_folds
        return TaskSpec(
            id=task_id,
            kind=reg["kind"],
            description=reg.get("description", ""),
            classes=tuple(reg.get("classes", ())),
            class_names=tuple(reg.get("class_names", ())),
            label_column=reg.get("label_column"),
            time_column=reg.get("time_column"),
            censorship_column=reg.get("censorship_column"),
            n_bins=int(reg.get("n_bins", 4)),
            split=split,
            metrics=tuple(reg.get("metrics", ())),
            primary_metric=reg.get("primary_metric", ""),
            cohort=_given(data.cohort, reg.get("cohort")) if get_kind(reg["kind"]).slide else None,
            dataset=_given(data.dataset, reg.get("dataset")) if not get_kind(reg["kind"]).slide else None,
            labels=data.labels,
            splits=data.splits,
            encoders=tuple(_given(data.encoders, self.encoder_ids)),
            external=data.external or (),
        )

    @cached_property
    def tasks(self) -> list[TaskSpec]:
        """The merged specs of this run's tasks, in :attr:`task_ids` order."""
        return [self.task(t) for t in self.task_ids]

    @cached_property
    def cohort_ids(self) -> list[str]:
        """Cohorts needed by this run's slide tasks (sorted, each once)."""
        return sorted({t.cohort for t in self.tasks if t.is_slide_task and t.cohort})

    def tile_dataset_ids_for(self, encoder: str) -> list[str]:
        """Tile datasets that this run's tile tasks need embedded by ``encoder`` (sorted)."""
        return sorted({t.dataset for t in self.tasks if not t.is_slide_task and t.dataset and encoder in t.encoders})

    def cohort(self, name: str) -> CohortSpec:
        """Where cohort ``name``'s slides are (``cohorts.<name>``); a missing entry says how to add it."""
        entry = self.settings.cohorts.get(name)
        if entry is None:
            raise ConfigError(
                f"cohort {name!r} has no entry under 'cohorts' in the config; add "
                f"'cohorts: {{{name}: {{slides: <glob>}}}}' or a manifest CSV"
            )
        return CohortSpec(name=name, slides=entry.slides, manifest=entry.manifest, mpp_overrides=entry.mpp_overrides,
                          n_shards=entry.n_shards, trident=entry.trident)

    def tile_dataset(self, name: str) -> TileDatasetSpec:
        """Where tile dataset ``name`` is (``tile_datasets.<name>``); a missing entry says how to add it."""
        entry = self.settings.tile_datasets.get(name)
        if entry is None:
            raise ConfigError(
                f"tile dataset {name!r} has no entry under 'tile_datasets' in the config; add "
                f"'tile_datasets: {{{name}: {{path: <folder>, format: image_folder}}}}'"
            )
        return TileDatasetSpec(name=name, path=entry.path, format=entry.format, groups=entry.groups,
                               group_pattern=entry.group_pattern)

    def n_shards(self, cohort: str) -> int:
        """Jobs per cohort for tiling and embedding (see docs/architecture.md, Jobs)."""
        spec = self.cohort(cohort)
        if spec.n_shards:
            return spec.n_shards
        n = count_slides(spec) if spec.has_slides else self._count_imported(cohort)
        return max(1, math.ceil(n / self.settings.tiling.shard_size)) if n else 1

    def _count_imported(self, cohort: str) -> int:
        """Slides of a features-only cohort: those with a bag for every encoder of its tasks (0 if none)."""
        try:
            encoders = [e for t in self.tasks if t.cohort == cohort for e in t.encoders]
        except ConfigError:
            return 0  # an unknown task: the start-up check (pathfuse.plan) reports it by name
        return len(shared_slide_ids(self.settings, cohort, encoders))

    # -- cross-reference checks (run once at start-up)
    def _check_references(self) -> None:
        problems = []
        for task_id in self.task_ids:
            if task_id not in self.task_registry:
                problems.append(f"tasks: {task_id!r} is not in the task registry; known: {sorted(self.task_registry)}")
        task_encoders = {e for t in self.task_ids if t in self.task_registry for e in self.task(t).encoders}
        for name in task_encoders | set(self.encoder_ids):
            if name not in self.encoder_registry:
                known = sorted(self.encoder_registry)
                problems.append(f"encoders: {name!r} is not in the encoder registry; known: {known}")
        for task_id in self.settings.task_data:
            if task_id not in self.task_registry:
                problems.append(f"task_data.{task_id}: not a task of the registry")
        if problems:
            raise ConfigError("invalid config:\n" + "\n".join(f"  - {p}" for p in problems))
        for task in self.tasks:
            if task.is_slide_task:
                self.cohort(task.cohort or "")
                if not task.labels:
                    raise ConfigError(f"task_data.{task.id}.labels: a slide task needs a label table CSV")
                if task.split.get("source") == "csv" and not task.splits:
                    raise ConfigError(
                        f"task_data.{task.id}.splits: split source is 'csv'; give the split CSV "
                        "path with a {fold} placeholder"
                    )
            else:
                self.tile_dataset(task.dataset or "")


def _given(value: Any, fallback: Any) -> Any:
    """``value`` when the config gives it, else ``fallback`` (the registry's or the run's)."""
    return fallback if value is None else value


def count_slides(spec: CohortSpec) -> int:
    """Number of slides a cohort lists right now (0 if its files do not exist yet)."""
    if spec.manifest:
        path = Path(spec.manifest)
        if not path.exists():
            return 0
        with open(path) as fh:
            return max(0, sum(1 for line in fh if line.strip()) - 1)
    return sum(1 for p in glob.glob(spec.slides or "", recursive=True) if Path(p).is_file())

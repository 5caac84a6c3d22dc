"""Run configuration: validation against the JSON Schemas, defaults, and typed views.

The same validated dict drives Snakemake (the Snakefile calls :func:`validate_config`) and
every library function (``Config.from_dict``), so a ``--config key=value`` override reaches
every stage. A bad key or value stops the run with a message naming the key path, the bad
value and what is allowed — before any job starts.
"""

from __future__ import annotations

import copy
import glob
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from pathfuse import resources
from pathfuse.bag_folders import shared_slide_ids
from pathfuse.kinds import KINDS, TaskKind, get_kind
from pathfuse.paths import Layout
from pathfuse.settings import RunSettings, Settings, TaskDataSettings, TridentSettings
from pathfuse.settings.retired import retired_key_message

STAGE_SECTIONS = ("demo", "tiling", "embedding", "experts", "fusion", "report")
TASK_KINDS = tuple(KINDS.names())  # built-in and plug-in kinds (pathfuse.kinds)
SLIDE_KINDS = tuple(k for k in TASK_KINDS if KINDS.get(k).slide)

SectionT = TypeVar("SectionT", bound=Settings)


_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ConfigError(ValueError):
    """The run config or a registry is invalid; the message says where and how to fix it."""


# ----------------------------------------------------------------------------- schemas
def load_yaml(path: str | Path) -> Any:
    """Read a YAML file, naming the file in any parse error.

    Uses libyaml's C loader when PyYAML has it: every job re-reads the schemas and registries,
    and the pure-Python loader spent ~0.6 s of each job's start-up on them.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: file not found")
    try:
        with open(path) as fh:
            return yaml.load(fh, Loader=_SAFE_LOADER)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err


def config_schema() -> dict[str, Any]:
    """The run-config schema with each stage's section schema inserted."""
    schema = load_yaml(resources.schema("config"))
    for section in STAGE_SECTIONS:
        schema["properties"][section] = load_yaml(resources.schema(f"sections/{section}"))
    return schema


def validate(instance: Any, schema: Mapping[str, Any], where: str) -> None:
    """Validate ``instance``; raise :class:`ConfigError` listing every problem by key path."""
    errors = sorted(Draft202012Validator(schema).iter_errors(instance), key=lambda e: list(e.path))
    if errors:
        lines = "\n".join(f"  - {_describe(e)}" for e in errors)
        raise ConfigError(f"invalid {where}:\n{lines}")


def _describe(err: ValidationError) -> str:
    """One line per problem (several for an object with several unknown keys): a renamed or
    removed key says what to write instead (pathfuse.settings.retired)."""
    key = ".".join(str(p) for p in err.path) or "<top level>"
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed)) if isinstance(err.instance, dict) else []
        fixes = {name: retired_key_message([*err.path, name], err.instance[name]) for name in extra}
        lines = [fix for fix in fixes.values() if fix]
        unknown = [name for name, fix in fixes.items() if not fix]
        if unknown:
            lines.append(f"{key}: unknown key(s) {unknown}; allowed: {allowed}")
        return "\n  - ".join(lines)
    if err.validator == "enum":
        return f"{key}: {err.instance!r} is not allowed; allowed: {err.validator_value}"
    if err.validator == "oneOf" and isinstance(err.instance, dict):
        return f"{key}: {err.message} (see the schema's description for the accepted forms)"
    allowed = err.schema.get("description")
    hint = f" ({allowed})" if allowed else ""
    return f"{key}: {err.instance!r} is not allowed: {err.message}{hint}"


def fill_defaults(instance: dict[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """Insert schema ``default`` values for missing keys, recursively through objects."""
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if isinstance(instance.get(key), dict):
            fill_defaults(instance[key], sub)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, value in instance.items():
            if key not in schema.get("properties", {}) and isinstance(value, dict):
                fill_defaults(value, extra)
    return instance


def validate_config(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a run config, fill defaults, and check cross-references against the registries.

    Returns the completed dict (the input is not modified). This is what the Snakefile runs at
    start-up, so an error here stops the workflow before any job.
    """
    cfg = fill_defaults(copy.deepcopy(dict(raw)), config_schema())
    validate(cfg, config_schema(), "config")
    Config(cfg)._check_references()
    return cfg


def section_settings(model: type[SectionT], **values: Any) -> SectionT:
    """One stage section's typed settings: ``values`` over its schema defaults, validated like a run
    config. For code without a run config (tests, benchmarks): the schema stays the one source
    of defaults."""
    name = next(
        (field for field, info in RunSettings.model_fields.items() if info.annotation is model and field in STAGE_SECTIONS),
        None,
    )
    if name is None:
        raise TypeError(f"{model.__name__} is not the model of a stage section {STAGE_SECTIONS}")
    schema = load_yaml(resources.schema(f"sections/{name}"))
    section = fill_defaults(copy.deepcopy(values), schema)
    validate(section, schema, f"{name} settings")
    return model.model_validate(section)


# ----------------------------------------------------------------------------- views
@dataclass(frozen=True)
class TaskSpec:
    """One benchmark task: registry facts merged with where the run config keeps its data."""

    id: str
    kind: str
    description: str
    classes: tuple[Any, ...] = ()
    class_names: tuple[str, ...] = ()
    label_column: str | None = None
    time_column: str | None = None
    censorship_column: str | None = None
    n_bins: int = 4
    split: Mapping[str, Any] = field(default_factory=dict)
    metrics: tuple[str, ...] = ()
    primary_metric: str = ""
    cohort: str | None = None
    dataset: str | None = None
    labels: str | None = None
    splits: str | None = None
    encoders: tuple[str, ...] = ()

    @property
    def kind_strategy(self) -> TaskKind:
        """What the task's kind decides (outputs, targets, loss, metrics, strata): :mod:`pathfuse.kinds`."""
        return get_kind(self.kind)

    @property
    def is_slide_task(self) -> bool:
        """Slide tasks pool tile features into bags; tile tasks classify single tiles."""
        return self.kind_strategy.slide

    @property
    def n_outputs(self) -> int:
        """Logits per sample: classes, or hazard bins for survival."""
        return self.kind_strategy.n_outputs(self)

    @property
    def n_folds(self) -> int:
        return int(self.split.get("n_folds", 1))

    @property
    def display_classes(self) -> list[str]:
        return list(self.class_names) if self.class_names else [str(c) for c in self.classes]


@dataclass(frozen=True)
class CohortSpec:
    """Where a cohort's slides are; exactly one of ``slides`` (glob) or ``manifest`` is set."""

    name: str
    slides: str | None = None
    manifest: str | None = None
    mpp_overrides: str | None = None
    n_shards: int | None = None
    trident: TridentSettings | None = None

    @property
    def has_slides(self) -> bool:
        """False for a features-only cohort (its features are all imported)."""
        return bool(self.slides or self.manifest)


@dataclass(frozen=True)
class TileDatasetSpec:
    """Where a tile dataset is, in which layout, and how its samples group into patients/slides.

    ``groups`` (a sample → group CSV) or ``group_pattern`` (a file-name regex) name each tile's
    patient or slide, so that splits and the bootstrap treat a group as one unit; without them
    (and without a ``group`` column in a features-format label table) every tile is its own unit.
    """

    name: str
    path: str
    format: str
    groups: str | None = None
    group_pattern: str | None = None


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
        return self.settings.seed

    @cached_property
    def layout(self) -> Layout:
        return Layout(Path(self.settings.results_dir))

    @cached_property
    def settings(self) -> RunSettings:
        """The typed settings, built once from the validated, default-filled dict."""
        return RunSettings.model_validate(self.raw)

    def section(self, name: str) -> dict[str, Any]:
        """A stage's settings as a dict (defaults filled from its schema section).

        The legacy accessor: new code reads :attr:`settings` (``cfg.settings.fusion.methods``);
        the modules that still read string keys move to it in a later pass.
        """
        return dict(self.raw.get(name, {}))

    # -- registries
    def registry_path(self, name: str) -> Path:
        """The run's ``tasks`` or ``encoders`` registry: ``registries.<name>``, else the packaged one."""
        given = getattr(self.settings.registries, name)
        return Path(given) if given else resources.registry(name)

    @cached_property
    def task_registry(self) -> dict[str, dict[str, Any]]:
        path = self.registry_path("tasks")
        reg = load_yaml(path)
        schema = load_yaml(resources.schema("tasks"))
        schema["additionalProperties"]["properties"]["kind"]["enum"] = KINDS.names()  # plug-in kinds too
        validate(reg, schema, f"task registry {path}")
        return reg

    @cached_property
    def encoder_registry(self) -> dict[str, dict[str, Any]]:
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
            cohort=_given(data.cohort, reg.get("cohort")) if reg["kind"] in SLIDE_KINDS else None,
            dataset=_given(data.dataset, reg.get("dataset")) if reg["kind"] not in SLIDE_KINDS else None,
            labels=data.labels,
            splits=data.splits,
            encoders=tuple(_given(data.encoders, self.encoder_ids)),
        )

    @cached_property
    def tasks(self) -> list[TaskSpec]:
        return [self.task(t) for t in self.task_ids]

    @cached_property
    def cohort_ids(self) -> list[str]:
        """Cohorts needed by this run's slide tasks (sorted, each once)."""
        return sorted({t.cohort for t in self.tasks if t.is_slide_task and t.cohort})

    def tile_dataset_ids_for(self, encoder: str) -> list[str]:
        """Tile datasets that this run's tile tasks need embedded by ``encoder`` (sorted)."""
        return sorted({t.dataset for t in self.tasks if not t.is_slide_task and t.dataset and encoder in t.encoders})

    def cohort(self, name: str) -> CohortSpec:
        entry = self.settings.cohorts.get(name)
        if entry is None:
            raise ConfigError(
                f"cohort {name!r} has no entry under 'cohorts' in the config; add "
                f"'cohorts: {{{name}: {{slides: <glob>}}}}' or a manifest CSV"
            )
        return CohortSpec(name=name, slides=entry.slides, manifest=entry.manifest, mpp_overrides=entry.mpp_overrides,
                          n_shards=entry.n_shards, trident=entry.trident)

    def tile_dataset(self, name: str) -> TileDatasetSpec:
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
        for name in {e for t in self.task_ids if t in self.task_registry for e in self.task(t).encoders} | set(self.encoder_ids):
            if name not in self.encoder_registry:
                problems.append(f"encoders: {name!r} is not in the encoder registry; known: {sorted(self.encoder_registry)}")
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

"""Run-config validation against the JSON Schemas: loading, defaults, and messages that say how to fix.

The schemas (src/pathfuse/resources/schemas/) are the one source of defaults: :func:`fill_defaults`
inserts them, :func:`validate` names every problem by key path, with the bad value and what is
allowed (a renamed or removed key says what to write instead).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from pathfuse import resources
from pathfuse.fusion import FUSERS
from pathfuse.settings import RunSettings, Settings
from pathfuse.settings.retired import retired_key_message
from pathfuse.slides import readers

STAGE_SECTIONS = ("demo", "tiling", "embedding", "experts", "fusion", "report")

SectionT = TypeVar("SectionT", bound=Settings)


_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ConfigError(ValueError):
    """The run config or a registry is invalid; the message says where and how to fix it."""


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
        schema["properties"][section] = section_schema(section)
    schema["properties"]["cohorts"]["additionalProperties"]["properties"]["reader"]["enum"] = _reader_names()
    return schema


def section_schema(name: str) -> dict[str, Any]:
    """One stage section's schema, with the registered names where a registry decides them.

    The packaged ``fusion.methods`` enum documents the built-in methods; validation takes every
    method of :data:`pathfuse.fusion.FUSERS`, so a plug-in method (entry-point group
    ``pathfuse.fusers``) is accepted without editing the schema, as task kinds are; likewise
    ``embedding.reader`` takes every registered slide reader (``pathfuse.readers``).
    """
    schema = load_yaml(resources.schema(f"sections/{name}"))
    if name == "fusion":
        schema["properties"]["methods"]["items"]["enum"] = FUSERS.names()
    if name == "embedding":
        schema["properties"]["reader"]["enum"] = _reader_names()
    return schema


def _reader_names() -> list[str]:
    return [readers.AUTO, *readers.names()]


def validate(instance: Any, schema: Mapping[str, Any], where: str) -> None:
    """Validate ``instance``; raise :class:`ConfigError` listing every problem by key path."""
    errors = sorted(Draft202012Validator(schema).iter_errors(instance), key=lambda e: list(e.path))
    if errors:
        lines = "\n".join(f"  - {_describe(e)}" for e in errors)
        raise ConfigError(f"invalid {where}:\n{lines}")


def _describe(err: ValidationError) -> str:
    """One line per problem (several for an object with several unknown keys).

    A renamed or removed key says what to write instead (pathfuse.settings.retired).
    """
    key = ".".join(str(p) for p in err.path) or "<top level>"
    # jsonschema types these as "maybe unset / a boolean schema"; the keywords read here live in object schemas.
    schema = err.schema if isinstance(err.schema, Mapping) else {}
    if err.validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        instance = err.instance if isinstance(err.instance, dict) else {}
        extra = sorted(set(instance) - set(allowed))
        fixes = {name: retired_key_message([*err.path, name], instance[name]) for name in extra}
        lines = [fix for fix in fixes.values() if fix]
        unknown = [name for name, fix in fixes.items() if not fix]
        if unknown:
            lines.append(f"{key}: unknown key(s) {unknown}; allowed: {allowed}")
        return "\n  - ".join(lines)
    if err.validator == "enum":
        return f"{key}: {err.instance!r} is not allowed; allowed: {err.validator_value}"
    if err.validator == "oneOf" and isinstance(err.instance, dict):
        return f"{key}: {err.message} (see the schema's description for the accepted forms)"
    description = schema.get("description")
    hint = f" ({description})" if description else ""
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


def section_settings(model: type[SectionT], **values: Any) -> SectionT:
    """One stage section's typed settings: ``values`` over its schema defaults, validated like a run config.

    For code without a run config (tests, benchmarks): the schema stays the one source of defaults.
    """
    name = next(
        (
            field
            for field, info in RunSettings.model_fields.items()
            if info.annotation is model and field in STAGE_SECTIONS
        ),
        None,
    )
    if name is None:
        raise TypeError(f"{model.__name__} is not the model of a stage section {STAGE_SECTIONS}")
    schema = section_schema(name)
    section = fill_defaults(copy.deepcopy(values), schema)
    validate(section, schema, f"{name} settings")
    return model.model_validate(section)

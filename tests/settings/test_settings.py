"""Typed settings (pathfuse.settings): they build from every shipped config and match the schemas."""

from __future__ import annotations

import copy
import json
import types
import typing
from typing import Any

import pydantic
import pytest

from pathfuse import resources
from pathfuse.config import (
    Config,
    ConfigError,
    config_schema,
    fill_defaults,
    load_yaml,
    section_settings,
    validate,
)
from pathfuse.settings import RunSettings, Settings, TilingSettings, retired

#: A config that sets every optional key (values need not exist on disk: no reference checks).
EVERY_KEY = {
    "results_dir": "out", "seed": 7, "logging": {"progress_interval_s": 0},
    "registries": {"tasks": "my_tasks.yaml", "encoders": "my_encoders.yaml"},
    "encoders": ["uni", "conch_v15"],
    "tasks": ["brca_idc_ilc", "unitopatho"],
    "cohorts": {
        "tcga": {"manifest": "m.csv", "mpp_overrides": "mpp.csv", "n_shards": 3, "reader": "jpeg"},
        "imported": {"trident": {"root": "/t", "models": {"uni": "uni_v1"}}},
    },
    "tile_datasets": {"unitopatho": {"path": "tiles", "format": "features", "group_pattern": "^(P..)"},
                      "other": {"path": "x", "groups": "g.csv"}},
    "task_data": {"brca_idc_ilc": {"cohort": "tcga", "labels": "l.csv", "splits": "s_{fold}.csv", "n_folds": 2,
                                   "encoders": ["uni"]},
                  "unitopatho": {"dataset": "unitopatho"}},
    "embedding": {"num_workers": 2, "channels_last": True,
                  "byo": {"slides": {"uni": {"imported": "/bags"}},
                          "tiles": {"uni": {"unitopatho": {"path": "f.npy", "ids": "sample_id"}}}}},
    "experts": {"max_tiles_per_bag": 8, "torch_threads": 1, "heads": {"survival": {"patience": 3}}},
    "fusion": {"shazam": {"max_tiles": 16}, "concat": {"patience": 2, "max_tiles": 4}},
    "report": {"primary_metric": {"brca_idc_ilc": "balanced_accuracy"}},
    "tiling": {"stride_px": 128, "max_tiles_per_slide": 10, "threshold": 20},
}


def build(raw: dict[str, Any]) -> RunSettings:
    """Fill and validate like validate_config, without the registry cross-references."""
    schema = config_schema()
    filled = fill_defaults(copy.deepcopy(raw), schema)
    validate(filled, schema, "config")
    return RunSettings.model_validate(filled)


@pytest.mark.parametrize("name", ["config.yaml", "lp22.yaml", "trident.yaml"])
def test_shipped_configs_build(repo, monkeypatch, name):
    monkeypatch.chdir(repo)
    cfg = Config.from_file(repo / "config" / name)
    settings = cfg.settings
    assert settings is cfg.settings  # built once
    assert settings.seed == cfg.raw["seed"] and settings.experts.n_seeds == cfg.raw["experts"]["n_seeds"]
    # every value equals the raw dict's, type included (an int stays an int: 15, not 15.0)
    assert _json(settings.model_dump(exclude_unset=True)) == _json(cfg.raw)


def test_every_optional_key_builds_with_its_value():
    settings = build(EVERY_KEY)
    assert settings.cohorts["tcga"].reader == "jpeg" and settings.cohorts["tcga"].slides is None
    assert settings.cohorts["imported"].trident is not None
    assert settings.cohorts["imported"].trident.models == {"uni": "uni_v1"}
    assert settings.task_data["brca_idc_ilc"].encoders == ("uni",)
    assert settings.embedding.byo.tiles["uni"]["unitopatho"].ids == "sample_id"
    assert settings.embedding.channels_last is True
    assert settings.experts.heads.survival.patience == 3 and settings.tiling.threshold == 20
    assert settings.logging.progress_interval_s == 0


def test_models_are_frozen_and_closed():
    settings = build(EVERY_KEY)
    with pytest.raises(pydantic.ValidationError):
        settings.experts.n_seeds = 2  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        TilingSettings.model_validate({**settings.tiling.model_dump(), "unknown": 1})


def test_section_settings_fills_schema_defaults():
    tiling = section_settings(TilingSettings, median_px=1)
    assert tiling.median_px == 1 and tiling.tile_px == load_yaml_default("tiling", "tile_px")
    with pytest.raises(ConfigError, match="median_px"):
        section_settings(TilingSettings, median_px=0)
    with pytest.raises(TypeError):
        section_settings(RunSettings)


# ----------------------------------------------------------------------------- schema <-> models
def _object_pairs(schema: dict[str, Any], annotation: Any, where: str) -> list[tuple[dict, type, str]]:
    """(object schema, model, key path) of every object with properties, walking both together."""
    annotation = _without_none(annotation)
    if "properties" in schema:
        assert isinstance(annotation, type) and issubclass(annotation, Settings), f"{where}: not a model"
        pairs = [(schema, annotation, where)]
        for key, sub in schema["properties"].items():
            if key in annotation.model_fields:
                pairs += _object_pairs(sub, annotation.model_fields[key].annotation, f"{where}.{key}")
        return pairs
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict) and typing.get_origin(annotation) is dict:
        return _object_pairs(extra, typing.get_args(annotation)[1], f"{where}.*")
    return []


def _without_none(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def test_models_have_exactly_the_schema_keys():
    """A key added to (or dropped from) a schema without its model, or vice versa, fails here."""
    pairs = _object_pairs(config_schema(), RunSettings, "config")
    assert len(pairs) > 20  # the walk reaches the nested blocks
    for schema, model, where in pairs:
        keys = set(schema["properties"])
        assert set(model.model_fields) == keys, where
        for key in keys:
            field = model.model_fields[key]
            sub = schema["properties"][key]
            # no defaults in the models: a key the schema fills (or requires) is a required field;
            # one it may leave out is optional with None
            if "default" in sub or key in schema.get("required", []):
                assert field.is_required(), f"{where}.{key} repeats a default of the schema"
            else:
                assert not field.is_required() and field.default is None, f"{where}.{key} must default to None"


def load_yaml_default(section: str, key: str) -> Any:
    return load_yaml(resources.schema(f"sections/{section}"))["properties"][key]["default"]


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


# ----------------------------------------------------------------------------- retired keys
def test_a_removed_key_says_what_replaced_it():
    with pytest.raises(ConfigError) as err:
        build({**EVERY_KEY, "fusion": {"selection_metric": "auroc", "typo_key": 1}})
    message = str(err.value)
    assert "fusion.selection_metric was removed in pathfuse 0.1: it was replaced by report.primary_metric.<task>" \
        in message
    assert "fusion: unknown key(s) ['typo_key']" in message  # a real typo is still reported as one
    assert "selection_metric'" not in message.split("unknown key(s)")[1]


def test_a_renamed_key_names_its_new_key_and_value(monkeypatch):
    monkeypatch.setitem(retired.RETIRED_KEYS, "experts.old_lr", retired.RetiredKey("0.1", "experts.heads.mutation.lr"))
    monkeypatch.setitem(retired.RETIRED_KEYS, "cohorts.*.glob", retired.RetiredKey("0.1", "cohorts.*.slides"))
    raw = {**EVERY_KEY, "experts": {"old_lr": 0.01}, "cohorts": {"tcga": {"glob": "s/*.svs"}}}
    with pytest.raises(ConfigError) as err:
        build(raw)
    message = str(err.value)
    assert ("experts.old_lr was renamed to experts.heads.mutation.lr in pathfuse 0.1; "
            "write experts.heads.mutation.lr: 0.01 instead") in message
    assert "cohorts.tcga.glob was renamed to cohorts.tcga.slides in pathfuse 0.1" in message
    assert "unknown key" not in message


def test_retired_keys_are_not_schema_keys():
    """A retired key that is (again) a schema key would never be reported as retired."""
    known = {where for _, _, where in _object_pairs(config_schema(), RunSettings, "config")}
    for path in retired.RETIRED_KEYS:
        parent, _, name = f"config.{path}".rpartition(".")
        schema_keys = [set(s["properties"]) for s, _, w in _object_pairs(config_schema(), RunSettings, "config")
                       if w == parent]
        assert parent in known and name not in schema_keys[0], path

"""Run-config validation: defaults, named errors, registries and cross-references."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import yaml

from pathfuse import resources
from pathfuse.config import Config, ConfigError, load_yaml, validate_config
from pathfuse.kinds import KINDS
from pathfuse.kinds.classification import WsiClassification


@pytest.fixture()
def demo_raw(repo, monkeypatch):
    monkeypatch.chdir(repo)
    return load_yaml(repo / "config" / "config.yaml")


def test_demo_config_is_valid_and_fills_defaults(demo_raw):
    before = copy.deepcopy(demo_raw)
    demo_raw["tiling"].pop("max_tiles_per_slide", None)
    cfg = Config.from_dict(demo_raw)
    assert len(cfg.task_ids) == 22
    assert cfg.section("tiling")["max_tiles_per_slide"] is None  # schema default filled
    assert cfg.raw["registries"] == {} and cfg.registry_path("tasks") == resources.registry("tasks")  # packaged
    assert "registries" not in before and "max_tiles_per_slide" not in demo_raw["tiling"]  # input untouched


def test_registry_has_22_benchmark_tasks_of_four_kinds(demo_raw):
    cfg = Config.from_dict(demo_raw)
    kinds = [cfg.task(t).kind for t in cfg.task_ids]
    assert {k: kinds.count(k) for k in set(kinds)} == {
        "wsi_classification": 5, "mutation": 5, "survival": 6, "tile_classification": 6}
    assert {"unitopatho", "huncrc"} <= set(cfg.task_registry)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"tiling": {"target_mpp": -1}}, ["tiling.target_mpp", "-1"]),
        ({"tiling": {"on_slide_error": "ignore"}}, ["tiling.on_slide_error", "'ignore'", "'fail', 'skip'"]),
        ({"tiling": {"tile_size": 256}}, ["tiling", "unknown key", "tile_size", "tile_px"]),
        ({"typo_section": 1}, ["<top level>", "typo_section"]),
        ({"seed": "abc"}, ["seed", "'abc'"]),
    ],
)
def test_bad_value_names_key_value_and_allowed(demo_raw, override, expected):
    raw = copy.deepcopy(demo_raw)
    for key, value in override.items():
        if isinstance(value, dict):
            raw.setdefault(key, {}).update(value)
        else:
            raw[key] = value
    with pytest.raises(ConfigError) as err:
        validate_config(raw)
    for text in expected:
        assert text in str(err.value)


def test_unknown_task_and_encoder_are_named(demo_raw):
    raw = dict(demo_raw, tasks=["brca_idc_ilc", "no_such_task"], encoders=["demo_vit_a", "nope"])
    with pytest.raises(ConfigError) as err:
        validate_config(raw)
    assert "no_such_task" in str(err.value) and "'nope'" in str(err.value)


def test_slide_task_without_cohort_entry_says_how_to_fix(demo_raw):
    raw = copy.deepcopy(demo_raw)
    del raw["cohorts"]["demo"]
    with pytest.raises(ConfigError, match="cohort 'demo' has no entry under 'cohorts'"):
        validate_config(raw)


def test_task_view_merges_registry_and_task_data(demo_raw):
    cfg = Config.from_dict(demo_raw)
    surv = cfg.task("surv_brca")
    assert surv.kind == "survival" and surv.cohort == "demo" and surv.n_folds == 2  # task_data over the registry's 5
    assert surv.n_outputs == 4 and surv.primary_metric == "c_index"
    tile = cfg.task("crc100k")
    assert tile.dataset == "demo_crc100k" and not tile.is_slide_task and tile.n_outputs == 9
    assert cfg.task("panda_isup").n_folds == 2  # the demo's 2 folds of 42 test patients
    raw = copy.deepcopy(demo_raw)
    del raw["task_data"]["panda_isup"]["n_folds"]
    assert Config.from_dict(raw).task("panda_isup").n_folds == 1  # the registry's holdout where task_data is silent


def test_a_slide_kind_registered_after_import_gets_its_cohort(demo_raw, tmp_path, monkeypatch):
    monkeypatch.setattr(KINDS, "_items", dict(KINDS._items))  # the registration ends with the test
    KINDS.register("late_slide_kind")(type("LateSlideKind", (WsiClassification,), {}))
    registry = load_yaml(resources.registry("tasks"))
    registry["late_task"] = dict(registry["brca_idc_ilc"], kind="late_slide_kind", lp22=False)
    path = tmp_path / "tasks.yaml"
    path.write_text(yaml.safe_dump(registry))
    raw = dict(demo_raw, tasks=["late_task"], registries={"tasks": str(path)},
               task_data={"late_task": demo_raw["task_data"]["brca_idc_ilc"]})
    task = Config.from_dict(raw).task("late_task")
    assert task.is_slide_task and task.cohort == "demo" and task.dataset is None


def test_overrides_and_n_shards(demo_raw, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(demo_raw))
    cfg = Config.from_file(path, {"tasks": ["crc100k"], "cohorts.demo.n_shards": 5})
    assert cfg.task_ids == ["crc100k"] and cfg.cohort_ids == [] and cfg.n_shards("demo") == 5


def test_n_shards_from_slide_count(demo_raw, tmp_path):
    for i in range(5):
        (tmp_path / f"s{i}.tiff").write_bytes(b"")
    raw = copy.deepcopy(demo_raw)
    raw["cohorts"]["demo"] = {"slides": str(tmp_path / "*.tiff")}
    raw["tiling"] = {"shard_size": 2}
    assert Config.from_dict(raw).n_shards("demo") == 3


def test_snakemake_stops_on_bad_config_before_any_job(repo, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--config", "seed=-3"],
        cwd=repo, check=False, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode != 0
    assert "seed: -3 is not allowed" in out.stdout + out.stderr

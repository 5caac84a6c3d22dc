"""Patients, really: the unit of the splits and the bootstrap.

Tile groups come from a CSV, a file-name pattern or the dataset, and are used by the splits and the
bootstrap; a slide table without case_id and a tile dataset without groups say so in the tables.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from support.encoders import make_config as encoder_config
from support.labels import write_cohort, write_labels
from support.synthetic_experts import ENCODER, make_config, tile_dataset

from pathfuse.config import ConfigError
from pathfuse.data.labels import load_samples
from pathfuse.data.splits import make_folds, patient_kfold
from pathfuse.encoders.tile_datasets import embed_dataset, embed_tile_datasets
from pathfuse.encoders.tile_sources import list_samples
from pathfuse.evaluation import foldstats
from pathfuse.io import read_parquet, read_parquet_meta, write_parquet
from pathfuse.report.run import resampling_units, task_facts

BARCODES = ["TCGA-AA-0001", "TCGA-AA-0002", "TCGA-BB-0003"]


def _tcga_folder(root, n_per_case: int = 2) -> None:
    """Class folders of tiles whose file names start with the case's TCGA barcode."""
    rng = np.random.default_rng(0)
    for c in ("TUM", "STR"):
        (root / c).mkdir(parents=True, exist_ok=True)
        for case in BARCODES:
            for i in range(n_per_case):
                pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / c / f"{case}-01Z-00-DX1_{i}.png")


def _cfg(tmp_path, **dataset):
    return encoder_config(tmp_path, tasks=["crc100k"], task_data={"crc100k": {"dataset": "tiles"}},
                                    tile_datasets={"tiles": {"path": str(tmp_path / "tiles"), **dataset}})


def test_group_pattern_and_groups_csv_name_each_tiles_group(tmp_path):
    _tcga_folder(tmp_path / "tiles")
    plain = list_samples(_cfg(tmp_path), "tiles")
    assert plain.attrs["group_source"] == "none" and (plain["group"] == plain["sample_id"]).all()

    by_pattern = list_samples(_cfg(tmp_path, group_pattern="^(TCGA-..-....)"), "tiles")
    assert sorted(set(by_pattern["group"])) == BARCODES
    assert by_pattern.attrs["group_source"].startswith("pattern:")
    named = list_samples(_cfg(tmp_path, group_pattern=r"(?P<group>TCGA-..-....)-01Z"), "tiles")
    assert named["group"].tolist() == by_pattern["group"].tolist()

    table = pd.DataFrame({"sample_id": plain["sample_id"], "group": plain["sample_id"].str[:3]})
    table.to_csv(tmp_path / "groups.csv", index=False)
    by_csv = list_samples(_cfg(tmp_path, groups=str(tmp_path / "groups.csv")), "tiles")
    assert set(by_csv["group"]) == {"TUM", "STR"}
    assert by_csv.attrs["group_source"] == f"csv:{tmp_path}/groups.csv"

    with pytest.raises(ConfigError, match="matches no group in 12 file name"):
        list_samples(_cfg(tmp_path, group_pattern="^(XYZ)"), "tiles")
    with pytest.raises(ConfigError, match="not both"):
        list_samples(_cfg(tmp_path, groups=str(tmp_path / "groups.csv"), group_pattern="^(T)"), "tiles")
    table.iloc[1:].to_csv(tmp_path / "partial.csv", index=False)
    with pytest.raises(ValueError, match="1 sample\\(s\\) of tile dataset tiles have no group"):
        list_samples(_cfg(tmp_path, groups=str(tmp_path / "partial.csv")), "tiles")


def test_changed_groups_rewrite_the_index_and_manifest_not_the_features(tmp_path):
    _tcga_folder(tmp_path / "tiles", n_per_case=1)
    cfg = _cfg(tmp_path)
    embed_dataset(cfg, "demo_vit_a", "tiles")
    features = cfg.layout.tile_features("demo_vit_a", "tiles")
    stamp = features.stat().st_mtime_ns
    index_path = cfg.layout.tile_feature_index("demo_vit_a", "tiles")
    index, meta = read_parquet(index_path, schema="tile_feature_index")
    assert meta["group_source"] == "none"

    regrouped = _cfg(tmp_path, group_pattern="^(TCGA-..-....)")
    embed_tile_datasets(regrouped, "demo_vit_a")
    index2, meta2 = read_parquet(index_path, schema="tile_feature_index")
    assert features.stat().st_mtime_ns == stamp  # not embedded again
    assert sorted(set(index2["group"])) == BARCODES and meta2["group_source"] == "pattern:^(TCGA-..-....)"
    assert index2.drop(columns="group").equals(index.drop(columns="group"))
    manifest = read_parquet_meta(cfg.layout.tile_features_manifest("demo_vit_a"),
                                 schema="tile_features_manifest")
    assert manifest["groups"]["tiles"]["source"] == "pattern:^(TCGA-..-....)"


def _grouped_tiles(tmp_path, per_group: int = 6, source: str = "csv:groups.csv") -> pd.DataFrame:
    """The synthetic tile dataset with ``per_group`` tiles per group (recorded source ``source``)."""
    index = tile_dataset(tmp_path, n=240)
    index["group"] = [f"G{i // per_group:03d}" for i in range(len(index))]
    path = make_config(tmp_path, ["tholdout"]).layout.tile_feature_index(ENCODER, "syntiles")
    write_parquet(index, path, schema="tile_feature_index", meta={"group_source": source})
    return index


@pytest.mark.parametrize(("task", "per_group"), [("tholdout", 6), ("ttile", 7)])
def test_a_group_stays_on_one_side_of_every_split(tmp_path, task, per_group):
    _grouped_tiles(tmp_path, per_group)
    cfg = make_config(tmp_path, [task], {"val_fraction": 0.2})
    samples = load_samples(cfg, cfg.task(task), ENCODER)
    assert samples.attrs["patients"] == {"unit": "group", "source": "csv:groups.csv", "note": ""}
    assert samples["patient_id"].nunique() == -(-240 // per_group)
    group = samples.set_index("sample_id")["patient_id"]
    if task == "ttile":  # the official split cuts groups in two: refused by name, not silently leaked
        with pytest.raises(ValueError, match="are in both"):
            make_folds(cfg, cfg.task(task), samples)
        return
    (fold,) = make_folds(cfg, cfg.task(task), samples)
    sides = [set(group.loc[list(ids)]) for ids in (fold.train, fold.val, fold.test)]
    assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
    for fit, held in patient_kfold(samples, 5, seed=3, stratify_by="label"):
        assert not set(group.loc[list(fit)]) & set(group.loc[list(held)])


def test_the_bootstrap_resamples_a_group_as_one_unit(tmp_path):
    _grouped_tiles(tmp_path, per_group=4)
    cfg = make_config(tmp_path, ["tholdout"])
    task = cfg.task("tholdout")
    samples = load_samples(cfg, task, ENCODER)
    rng = np.random.default_rng(0)
    rows = samples.assign(logits=list(rng.normal(size=(len(samples), 3))))
    sample = foldstats.fold_sample(task, 0, {"m": rows}, {}, need_curves=False)
    assert len(sample.patients) == 60  # 240 tiles, 60 groups: n_test_patients counts groups
    units = sample.units["m"]
    draws = foldstats.draw_patients(sample.strata, 20, rng)
    for picked in draws:
        tiles = units.units_of(picked)
        assert len(tiles) == 4 * len(picked)  # every drawn group brings all its tiles
        per_group = np.bincount(units.patient[tiles], minlength=60)
        assert np.array_equal(per_group, 4 * np.bincount(picked, minlength=60))


def test_a_tile_dataset_without_groups_says_its_cis_are_per_tile(tmp_path):
    _grouped_tiles(tmp_path, per_group=1, source="none")
    cfg = make_config(tmp_path, ["tholdout"])
    samples = load_samples(cfg, cfg.task("tholdout"), ENCODER)
    patients = samples.attrs["patients"]
    assert patients["unit"] == "tile" and "bootstrap CIs are per tile" in patients["note"]
    metas = {"tholdout": {"patients": patients}, "tbin": {"patients": {"unit": "patient", "note": ""}}}
    assert task_facts(metas) == {"tholdout": patients["note"]}
    assert resampling_units(metas) == {"tholdout": "tile", "tbin": "patient"}


def test_a_slide_table_without_case_id_is_warned_about_by_name(tmp_path, caplog):
    write_cohort(tmp_path)
    rows = [{"slide_id": f"S{i:03d}", "label": ["neg", "pos"][i % 2]} for i in range(12)]
    write_labels(tmp_path, rows)
    cfg = make_config(tmp_path, ["tbin"])
    with caplog.at_level(logging.WARNING, logger="pathfuse.data.labels"):
        samples = load_samples(cfg, cfg.task("tbin"), ENCODER)
    table = str(tmp_path / "labels_bin.csv")
    assert f"label table {table} has no case_id column: every slide is its own patient" in caplog.text
    assert (samples["patient_id"] == samples["sample_id"]).all()
    assert samples.attrs["patients"]["unit"] == "slide" and table in samples.attrs["patients"]["note"]
    write_labels(tmp_path, [{"slide_id": f"S{i:03d}", "case_id": f"P{i // 2}", "label": "neg"}
                                  for i in range(12)])
    assert load_samples(cfg, cfg.task("tbin"), ENCODER).attrs["patients"]["note"] == ""

"""A features-only TRIDENT cohort with one of each fault a real tree has: the doctor's verdict, then the run's.

44 slides, two encoders. Each fault is injected alone for the doctor (``pathfuse doctor``'s own
checks, deep) and then the workflow is run on it: a fault the doctor FAILs stops the run by name
(before any job where the inputs show it, else in the job that reads it), never later; a fault
the doctor passes runs to the tables, with the slide in the report's left-out table. The run with
the faults a lab meets every day (one encoder lacks 5 slides, one bag is empty, a labelled slide
has no features, a slide is in no split) uses default settings and reaches the tables, every
method scored on the same samples.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from safetensors import safe_open
from support.reduced_demo import snakemake_cmd
from support.trident import (
    TRIDENT_ATTRS,
    n_tiles,
    quick_settings,
    trident_config,
    write_bag,
    write_bags,
    write_labels_and_splits,
)

from pathfuse.config import Config
from pathfuse.doctor import FAIL, run_checks
from pathfuse.io import read_parquet, read_parquet_meta

pytestmark = pytest.mark.slow
MODELS = {"tri_uni": "uni_v1", "tri_conch": "conch_v15"}
DIMS = {"tri_uni": 16, "tri_conch": 12}
SLIDES = {f"S{i:02d}": i % 2 for i in range(44)}
LACKING = ("S05", "S06", "S07", "S08", "S09")  # no tri_conch bag


def _folder(root: Path, encoder: str) -> Path:
    return root / f"features_{MODELS[encoder]}"


def make_cohort(work: Path, faults: set[str], **settings: object) -> Path:
    """The clean cohort plus ``faults``; returns its run config."""
    root = work / "trident_job" / "20x_256px_0px_overlap"
    write_bags(_folder(root, "tri_uni"), SLIDES, DIMS["tri_uni"], seed=1)
    write_bags(_folder(root, "tri_conch"), SLIDES, DIMS["tri_conch"], seed=2)
    labels_of = dict(SLIDES)
    if "truncated" in faults:  # a killed writer: the file ends mid-way
        bag = _folder(root, "tri_uni") / "S01.h5"
        bag.write_bytes(bag.read_bytes()[: bag.stat().st_size // 2])
    if "empty" in faults:
        write_bag(_folder(root, "tri_conch") / "S02.h5", np.zeros((0, DIMS["tri_conch"]), np.float32))
    if "nan" in faults:
        feats = np.ones((n_tiles("S03"), DIMS["tri_uni"]), np.float32)
        feats[2, 4] = np.nan
        write_bag(_folder(root, "tri_uni") / "S03.h5", feats)
    if "wrong_width" in faults:
        write_bag(_folder(root, "tri_conch") / "S04.h5", np.ones((n_tiles("S04"), 10), np.float32))
    if "misaligned" in faults:  # another tiling for one encoder: Shazam and concat cannot pair its tiles
        write_bag(_folder(root, "tri_conch") / "S12.h5", np.ones((n_tiles("S12") + 1, DIMS["tri_conch"]), np.float32))
    if "missing" in faults:
        for slide in LACKING:
            (_folder(root, "tri_conch") / f"{slide}.h5").unlink()
    if "no_features" in faults:
        labels_of["X99"] = 1
    labels, splits = write_labels_and_splits(work, labels_of, unsplit=("S10",) if "unsplit" in faults else ())
    if "duplicate" in faults:  # S11 listed twice, with two labels
        table = pd.read_csv(labels)
        extra = table[table["slide_id"] == "S11"].assign(label="ILC" if SLIDES["S11"] == 0 else "IDC")
        pd.concat([table, extra]).to_csv(labels, index=False)
    return trident_config(work, root, MODELS, DIMS, labels, splits, **settings)


def doctor_rows(config: Path) -> list:
    return run_checks(Config.from_file(config), deep=True)


def _snakemake(work: Path, config: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(snakemake_cmd(work, config, "--cores", "2", *extra), check=False, capture_output=True,
                          text=True, timeout=900)


# A fault the doctor FAILs: (fault, settings, what its FAIL row says, where the run stops and what it says)
STOPS = {
    "truncated": ({}, ["S01.h5", "unreadable", "re-extract"], "start", "S01.h5"),
    "wrong_width": ({}, ["S04.h5", "10-d features, the encoder registry says 12"], "start", "S04.h5"),
    "duplicate": ({}, ["listed twice with different values", "S11"], "start", "S11"),
    "nan": ({}, ["S03.h5", "NaN/Inf", "nan_policy"], "job", "S03"),
    "misaligned": ({}, ["different tiles per encoder", "S12", "drop the feature-level methods"], "start", "S12"),
    # Not a file fault: a method that reads level features, on a cohort of imported bags (which have none).
    "levels": ({"fusion": {**quick_settings()["fusion"], "methods": ["mean_logits", "shazam_levels"]}},
               ["cohort 'tri' is features only", "no levels", "drop shazam_levels"], "start", "shazam_levels"),
}


@pytest.mark.parametrize("fault", sorted(STOPS))
def test_a_fault_the_doctor_fails_stops_the_run_by_name(tmp_path, fault):
    settings, verdict, where, named = STOPS[fault]
    config = make_cohort(tmp_path, {fault}, **settings)
    failed = [r for r in doctor_rows(config) if r.status == FAIL]
    assert len(failed) == 1, failed
    text = f"{failed[0].detail} {failed[0].fix}"
    assert all(part in text for part in verdict), text
    out = _snakemake(tmp_path, config, *(["-n"] if where == "start" else []))
    log = out.stdout + out.stderr
    assert out.returncode != 0 and named in log, log[-3000:]
    assert "Traceback" not in log or where == "job"
    if where == "start":
        assert "inputs not usable" in log and not (tmp_path / "results" / "features").exists()
    else:  # the import job stops it: no expert ever ran
        assert "rule expert" not in out.stdout and not (tmp_path / "results" / "experts").exists()


def test_bad_files_are_left_out_and_recorded_when_the_policy_says_skip(tmp_path):
    config = make_cohort(tmp_path, {"truncated", "wrong_width"},
                         embedding={"byo": {"on_bad_file": "skip"}})
    rows = doctor_rows(config)
    assert not [r for r in rows if r.status == FAIL]
    coverage = next(r for r in rows if r.target == "tri (features only)")
    assert "S01 (unusable bag for tri_uni" in coverage.detail and "S04 (unusable bag for tri_conch" in coverage.detail
    plan = _snakemake(tmp_path, config, "-n")
    assert plan.returncode == 0, plan.stderr[-3000:]


def test_everyday_faults_run_to_the_tables_with_default_settings(tmp_path):
    faults = {"missing", "empty", "no_features", "unsplit"}
    config = make_cohort(tmp_path, faults)
    rows = doctor_rows(config)
    assert not [r for r in rows if r.status == FAIL], rows
    coverage = next(r for r in rows if r.target == "tri (features only)")
    assert "6 left out" in coverage.detail and "S02 (empty bag for tri_conch)" in coverage.detail
    assert all(f"{s} (no bag for tri_conch)" in coverage.detail for s in LACKING)
    table_row = next(r for r in rows if r.target == "brca_idc_ilc")
    assert "no slide of the cohort: X99" in table_row.detail and "in no split: S10" in table_row.detail

    out = _snakemake(tmp_path, config)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    log = out.stdout + out.stderr
    results = tmp_path / "results"
    assert "rule tile" not in log and not (results / "tiles").exists(), "a features-only cohort was tiled"
    # One sample set: every expert and every method predicts exactly the same (fold, split, sample) rows.
    predictions = sorted((results / "experts" / "brca_idc_ilc").glob("*/predictions.parquet")) + sorted(
        (results / "fusion" / "brca_idc_ilc").glob("*/predictions.parquet"))
    assert len(predictions) == 2 + len(Config.from_file(config).fusion_methods)
    keys = {p.parent.name: _test_rows(p) for p in predictions}
    assert len(set(keys.values())) == 1, {m: len(k) for m, k in keys.items()}
    scored = set().union(*(k for k in keys.values()))
    assert not {s for _, s in scored} & {"S02", "X99", "S10", *LACKING}
    # The report's left-out table: each slide with its reason.
    left, _ = read_parquet(results / "tables" / "left_out.parquet", schema="table:left_out")
    reasons = {r: list(ids) for r, ids in zip(left["reason"], left["ids"], strict=True)}
    assert reasons["no bag for tri_conch"] == list(LACKING)
    assert reasons["empty bag for tri_conch"] == ["S02"]
    assert reasons["in no split of any fold"] == ["S10"]
    assert next(ids for r, ids in reasons.items() if r.startswith("labelled, but no slide")) == ["X99"]
    markdown = (results / "tables" / "left_out.md").read_text()
    assert "no bag for tri_conch" in markdown and "S05, S06, S07, S08, S09" in markdown and "S02" in markdown
    meta = read_parquet_meta(results / "experts" / "brca_idc_ilc" / "tri_uni" / "predictions.parquet",
                             schema="predictions")
    assert meta["dropped"]["empty bag for tri_conch"]["ids"] == ["S02"]
    with safe_open(str(results / "features" / "tri_uni" / "tri" / "S00.safetensors"), framework="np") as fh:
        attrs = yaml.safe_load(fh.metadata()["source_attrs"])
    assert {k: attrs[k] for k in TRIDENT_ATTRS} == TRIDENT_ATTRS


def _test_rows(path: Path) -> frozenset[tuple[int, str]]:
    df, _ = read_parquet(path, schema="predictions", columns=["fold", "split", "oof", "sample_id"])
    rows = df[(df["split"] == "test") & ~df["oof"].astype(bool)]
    return frozenset(zip(rows["fold"].astype(int), rows["sample_id"].astype(str), strict=True))

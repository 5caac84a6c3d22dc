"""End-to-end: a cohort whose features are imported for one encoder and computed for the other.

A real Snakemake run on the finished reduced demo's real (OpenSlide-read) slides: one encoder is
computed from their tiles, the other imported. Features-only (TRIDENT) cohorts run end to end in
tests/workflow/test_fault_injection.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from support.reduced_demo import REPO, snakemake_cmd
from support.trident import quick_settings, write_bags, write_registry

from pathfuse.io import read_parquet, read_parquet_meta

pytestmark = pytest.mark.slow
TABLES = ["benchmark", "ranks", "summary", "cost", "gate_weights", "left_out"]


def _run(work: Path, config: Path, *extra: str) -> subprocess.CompletedProcess:
    out = subprocess.run(snakemake_cmd(work, config, "--cores", "2", *extra), check=False, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    return out


def _field(block: str, name: str) -> str:
    """One field (``input``, ``output`` …) of a job block of ``snakemake -n``'s output."""
    for line in block.splitlines():
        if line.strip().startswith(f"{name}:"):
            return line
    return ""


def _assert_tables(results: Path, methods: set[str]) -> pd.DataFrame:
    for name in TABLES:
        assert (results / "tables" / f"{name}.parquet").exists(), name
    bench, _ = read_parquet(results / "tables" / "benchmark.parquet", schema="table:benchmark")
    assert methods <= set(bench["method"])
    return bench


def test_mixed_cohort_one_encoder_computed_one_imported(resumed_run, tmp_path):
    demo = resumed_run.results / "demo"
    slide_ids = sorted(p.stem for p in (demo / "slides").glob("*.tiff"))
    labels = pd.read_csv(demo / "labels" / "brca_idc_ilc.csv")
    write_bags(tmp_path / "mine", {s: int(lab == "ILC") for s, lab in zip(labels["slide_id"], labels["label"],
                                                                             strict=True) if s in slide_ids},
                dim=8, seed=4)
    settings = quick_settings()
    # not concat/Shazam: they pair tile i of every encoder, and these bags are other tiles
    settings["fusion"]["methods"] = ["logitprod", "mean_logits", "best_val_expert"]
    config = {
        "results_dir": "results_mixed", "encoders": ["demo_vit_a", "mine"], "tasks": ["brca_idc_ilc"],
        "registries": {"tasks": str(REPO / "src" / "pathfuse" / "resources" / "tasks.yaml"),
                       "encoders": str(write_registry(tmp_path, {"mine": 8}))},
        "cohorts": {"demo": {"slides": str(demo / "slides" / "*.tiff"), "n_shards": 2}},
        "task_data": {"brca_idc_ilc": {"cohort": "demo", "labels": str(demo / "labels" / "brca_idc_ilc.csv"),
                                       "splits": str(demo / "splits" / "brca_idc_ilc" / "splits_{fold}.csv"),
                                       "n_folds": 2}},  # the reduced demo writes 2 folds
        "embedding": {"num_workers": 0, "byo": {"slides": {"mine": {"demo": str(tmp_path / "mine")}}}},
        "tiling": {"target_mpp": 0.5, "tile_px": 256},
        **settings,
    }
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    plan = subprocess.run(snakemake_cmd(resumed_run.workdir, path, "-n", "--cores", "1"), check=False,
                          capture_output=True, text=True, timeout=300)
    assert plan.returncode == 0, plan.stderr[-3000:]
    jobs = [b for b in plan.stdout.split("\nrule ")[1:] if b.startswith("embed_slides:")]
    imported = [b for b in jobs if "encoder=mine" in b]
    assert len(imported) == 2 and len(jobs) == 4
    waits = [b for b in imported if "tiles/demo/_shards" in _field(b, "input")]
    assert not waits, "the imported encoder waits for tiling"
    assert all("tiles/demo/_shards" in _field(b, "input") for b in jobs if b not in imported)
    _run(resumed_run.workdir, path)
    results = resumed_run.workdir / "results_mixed"
    _assert_tables(results, {"demo_vit_a", "mine", "logitprod", "mean_logits"})
    meta = read_parquet_meta(results / "features" / "mine" / "demo" / "_shards" / "shard0000.parquet",
                             schema="feature_shard")
    assert meta["byo"] == str(tmp_path / "mine")
    assert list((results / "tiles" / "demo").glob("*.parquet")), "the computed encoder's slides were not tiled"

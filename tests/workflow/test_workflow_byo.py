"""End-to-end: cohorts that exist as imported features (TRIDENT), alone or beside computed features.

Real Snakemake runs. The features-only run has no slide file anywhere: its cohort is a TRIDENT
job tree, so no tiling or embedding job may run. The mixed run reuses the finished reduced demo's
real (OpenSlide-read) slides: one encoder is computed from their tiles, the other imported.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml
from safetensors import safe_open
from support.reduced_demo import REPO, snakemake_cmd

from pathfuse.io import read_parquet, read_parquet_meta

pytestmark = pytest.mark.slow
TABLES = ["benchmark", "ranks", "summary", "cost", "gate_weights"]
TRIDENT_ATTRS = {"patch_size": 256, "patch_size_level0": 512, "level0_magnification": 40, "target_magnification": 20}


def _quick_settings() -> dict:
    """The demo's short schedules (experts, fusion, report), so each job takes seconds."""
    demo = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    return {k: demo[k] for k in ("experts", "fusion", "report")}


def _registry(work: Path, dims: dict[str, int]) -> Path:
    entries = yaml.safe_load((REPO / "src" / "pathfuse" / "resources" / "encoders.yaml").read_text())
    entries.update({name: {"kind": "byo", "dim": dim, "description": "imported features (test)"}
                    for name, dim in dims.items()})
    path = work / "encoders.yaml"
    path.write_text(yaml.safe_dump(entries))
    return path


def _write_bags(folder: Path, slides: dict[str, int], dim: int, seed: int) -> None:
    """TRIDENT-style bags: ``features`` [n, dim] with a label signal, ``coords`` with TRIDENT's attrs."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for slide, label in slides.items():
        n = 6 + sum(map(ord, slide)) % 8  # the same tiles for every encoder of a slide, as in one TRIDENT job
        feats = rng.normal(size=(n, dim)).astype(np.float32)
        feats[:, :3] += 1.5 * label
        with h5py.File(folder / f"{slide}.h5", "w") as fh:
            fh["features"] = feats
            fh["coords"] = np.stack([np.arange(n) * 512, np.zeros(n)], axis=1).astype(np.int64)
            for key, value in TRIDENT_ATTRS.items():
                fh["coords"].attrs[key] = value


def _labels_and_splits(work: Path, slides: dict[str, int], n_folds: int = 3) -> tuple[Path, str]:
    ids = sorted(slides)
    labels = pd.DataFrame({"case_id": ids, "slide_id": ids, "label": ["ILC" if slides[s] else "IDC" for s in ids]})
    labels_path = work / "labels.csv"
    labels.to_csv(labels_path, index=False)
    for fold in range(n_folds):
        test = [s for i, s in enumerate(ids) if i % n_folds == fold]
        val = [s for i, s in enumerate(ids) if i % n_folds == (fold + 1) % n_folds]
        train = [s for s in ids if s not in test and s not in val]
        split = pd.DataFrame({k: pd.Series(v, dtype=object) for k, v in (("train", train), ("val", val),
                                                                         ("test", test))})
        (work / "splits").mkdir(exist_ok=True)
        split.to_csv(work / "splits" / f"splits_{fold}.csv", index=False)
    return labels_path, str(work / "splits" / "splits_{fold}.csv")


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


def test_features_only_trident_cohort_runs_to_the_tables(tmp_path):
    rng = np.random.default_rng(0)
    slides = {f"TCGA-{i:02d}": int(rng.integers(0, 2)) for i in range(32)}
    root = tmp_path / "trident_job" / "20x_256px_0px_overlap"
    _write_bags(root / "features_uni_v1", {**slides, "only-in-uni": 0}, dim=16, seed=1)
    _write_bags(root / "features_conch_v15", slides, dim=12, seed=2)
    labels, splits = _labels_and_splits(tmp_path, slides)
    config = {
        "results_dir": "results", "seed": 3, "encoders": ["tri_uni", "tri_conch"], "tasks": ["brca_idc_ilc"],
        "registries": {"tasks": str(REPO / "src" / "pathfuse" / "resources" / "tasks.yaml"),
                       "encoders": str(_registry(tmp_path, {"tri_uni": 16, "tri_conch": 12}))},
        "cohorts": {"tri": {"trident": {"root": str(root), "models": {"tri_uni": "uni_v1", "tri_conch": "conch_v15"}}}},
        "task_data": {"brca_idc_ilc": {"cohort": "tri", "labels": str(labels), "splits": splits, "n_folds": 3}},
        **_quick_settings(),
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))

    out = _run(tmp_path, path)
    log = out.stdout + out.stderr
    results = tmp_path / "results"
    assert "rule tile" not in log and not (results / "tiles").exists(), "a features-only cohort was tiled"
    assert "only-in-uni" in log and "no bag for tri_conch" in log  # the left-out slide, named once
    bench = _assert_tables(results, {"tri_uni", "tri_conch", "logitprod", "shazam", "concat"})
    assert bench["mean"].notna().any()
    meta = read_parquet_meta(results / "features" / "tri_uni" / "tri" / "_shards" / "shard0000.parquet",
                             schema="feature_shard")
    assert meta["left_out"] == {"only-in-uni": "no bag for tri_conch"}
    with safe_open(str(results / "features" / "tri_uni" / "tri" / "TCGA-00.safetensors"), framework="np") as fh:
        attrs = yaml.safe_load(fh.metadata()["source_attrs"])
    assert {k: attrs[k] for k in TRIDENT_ATTRS} == TRIDENT_ATTRS


def test_mixed_cohort_one_encoder_computed_one_imported(resumed_run, tmp_path):
    demo = resumed_run.results / "demo"
    slide_ids = sorted(p.stem for p in (demo / "slides").glob("*.tiff"))
    labels = pd.read_csv(demo / "labels" / "brca_idc_ilc.csv")
    _write_bags(tmp_path / "mine", {s: int(lab == "ILC") for s, lab in zip(labels["slide_id"], labels["label"],
                                                                             strict=True) if s in slide_ids},
                dim=8, seed=4)
    settings = _quick_settings()
    # not concat/Shazam: they pair tile i of every encoder, and these bags are other tiles
    settings["fusion"]["methods"] = ["logitprod", "mean_logits", "best_val_expert"]
    config = {
        "results_dir": "results_mixed", "encoders": ["demo_vit_a", "mine"], "tasks": ["brca_idc_ilc"],
        "registries": {"tasks": str(REPO / "src" / "pathfuse" / "resources" / "tasks.yaml"),
                       "encoders": str(_registry(tmp_path, {"mine": 8}))},
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

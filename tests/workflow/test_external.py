"""End-to-end: external test cohorts and ``pathfuse predict`` on a finished run, never retraining a model.

Real Snakemake runs and the real command line: the reduced demo's finished run gains an external
cohort (its slides read as another cohort); a features-only (TRIDENT) run predicts new, unlabelled
slides with ``pathfuse predict``, and refuses to when the config's settings no longer match the
models it trained.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from support.reduced_demo import ResumedRun, snakemake_cmd
from support.trident import trident_config, write_bags, write_labels_and_splits

from pathfuse.io import read_parquet

pytestmark = pytest.mark.slow
TASK = "brca_idc_ilc"
ALLOWED = {"tile", "tile_index", "embed_slides", "predict", "evaluate_external", "report", "all"}


def _with_external(run: ResumedRun, path: Path) -> Path:
    """The run's config plus an external cohort of brca_idc_ilc: the demo's slides read as cohort demo_ext."""
    raw = yaml.safe_load(run.config.read_text())
    raw["cohorts"]["demo_ext"] = {"slides": raw["cohorts"]["demo"]["slides"], "n_shards": 1}
    entry = raw["task_data"][TASK]
    entry["external"] = [{"cohort": "demo_ext", "labels": entry["labels"]}]
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _job_stats(text: str) -> dict[str, int]:
    import re

    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)}


def test_an_external_cohort_adds_no_training_job(resumed_run):
    config = _with_external(resumed_run, resumed_run.workdir / "external.yaml")
    out = subprocess.run(snakemake_cmd(resumed_run.workdir, config, "-n", "--cores", "1"), check=False,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    jobs = _job_stats(out.stdout + out.stderr)
    assert set(jobs) <= ALLOWED, jobs
    assert jobs["predict"] == 1 and jobs["evaluate_external"] == 1 and jobs["embed_slides"] >= 1


def test_external_results_reach_the_tables_and_nothing_trained_is_rewritten(resumed_run, tmp_path):
    work = tmp_path / "run"
    shutil.copytree(resumed_run.workdir, work, symlinks=True)
    results = work / "results"
    trained = {p: p.stat().st_mtime_ns for pat in ("experts/*/*/*", "fusion/*/*/*", "fusion/*/_methods.parquet",
                                                   f"metrics/{TASK}.parquet") for p in results.glob(pat)}
    config = _with_external(ResumedRun(work, work / resumed_run.config.name, {}, {}), work / "external.yaml")
    out = subprocess.run(snakemake_cmd(work, config, "--cores", "2"), check=False, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    assert {str(p): m for p, m in trained.items() if p.stat().st_mtime_ns != m} == {}
    table, _ = read_parquet(results / "tables" / "external.parquet", schema="table:external")
    assert set(table["task"]) == {TASK} and set(table["cohort"]) == {"demo_ext"}
    assert set(table["split"]) == {"external"}
    scored = table.set_index("method")
    for source in ("demo_vit_a", "demo_vit_b", "logitprod", "mean_logits", "stacking", "best_val_expert"):
        assert 0 <= scored.loc[source, "value"] <= 1, source
        assert scored.loc[source, "ci_low"] <= scored.loc[source, "value"] <= scored.loc[source, "ci_high"]
        assert not np.isnan(scored.loc[source, "cv_value"]), source
    assert scored.loc["best_val_expert", "gain"] == 0
    assert scored.loc["shazam", "status"] == "missing" and "feature-level" in scored.loc["shazam", "note"]
    summary, _ = read_parquet(results / "tables" / "summary.parquet", schema="table:summary")
    assert summary.set_index("method").loc["logitprod", "external_n"] == 1
    assert "demo_ext" in (results / "tables" / "external.md").read_text()
    assert (results / "report" / "external.png").stat().st_size > 10_000
    lp, _ = read_parquet(results / "external" / TASK / "demo_ext" / "logitprod" / "predictions.parquet",
                         schema="predictions")
    ensemble = lp[lp["fold"] == -1]
    assert len(ensemble) and ensemble["gate_weights"].map(lambda w: abs(sum(w) - 1) < 1e-4).all()
    assert set(lp["fold"]) == {-1, 0, 1}


# ----------------------------------------------------------------------------- pathfuse predict
MODELS = {"tri_uni": "uni_v1", "tri_conch": "conch_v15"}
DIMS = {"tri_uni": 16, "tri_conch": 12}


@pytest.fixture(scope="module")
def features_only_run(tmp_path_factory) -> tuple[Path, Path]:
    """A finished features-only run (TRIDENT tree), and a second tree of six new, unlabelled slides."""
    work = tmp_path_factory.mktemp("predict")
    slides = {f"S{i:02d}": i % 2 for i in range(24)}
    root = work / "trident_job" / "20x_256px_0px_overlap"
    new = work / "new_job" / "20x_256px_0px_overlap"
    for seed, (encoder, model) in enumerate(MODELS.items(), start=1):
        write_bags(root / f"features_{model}", slides, DIMS[encoder], seed=seed)
        write_bags(new / f"features_{model}", {f"N{i}": i % 2 for i in range(6)}, DIMS[encoder], seed=10 + seed)
    labels, splits = write_labels_and_splits(work, slides)
    config = trident_config(work, root, MODELS, DIMS, labels, splits)
    raw = yaml.safe_load(config.read_text())
    raw["cohorts"]["new"] = {"trident": {"root": str(new), "models": dict(MODELS)}}
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = subprocess.run(snakemake_cmd(work, config, "--cores", "2"), check=False, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    return work, config


def _predict(work: Path, config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pathfuse.cli", "predict", "--config", str(config), "--run",
                           str(work / "results"), "--task", TASK, "--cohort", "new"], cwd=work, check=False,
                          capture_output=True, text=True, timeout=600)


def test_predict_writes_every_sources_predictions_gates_and_heatmaps(features_only_run):
    work, config = features_only_run
    out = _predict(work, config)
    assert out.returncode == 0, out.stderr[-5000:]
    folder = work / "results" / "external" / TASK / "new"
    manifest, meta = read_parquet(folder / "_predictions.parquet", schema="external_manifest")
    assert meta["labelled"] is False
    ok = set(manifest.loc[manifest["status"] == "ok", "source"])
    assert {*MODELS, "logitprod", "mean_logits", "stacking", "best_val_expert"} <= ok
    for source in ok:
        rows, _ = read_parquet(folder / source / "predictions.parquet", schema="predictions")
        assert sorted(rows.loc[rows["fold"] == -1, "sample_id"]) == [f"N{i}" for i in range(6)], source
        assert (rows["label"] == -1).all()
    gates, _ = read_parquet(folder / "logitprod" / "predictions.parquet", schema="predictions")
    assert gates["gate_weights"].map(len).eq(len(MODELS)).all()
    attention, _ = read_parquet(folder / "tri_uni" / "attention.parquet", schema="attention")
    assert set(attention["fold"]) == {-1, 0, 1, 2}
    assert (folder / "heatmaps.png").stat().st_size > 5_000


def test_predict_refuses_models_trained_under_other_settings(features_only_run):
    work, config = features_only_run
    raw = yaml.safe_load(config.read_text())
    raw["experts"]["heads"]["wsi_classification"]["lr"] = 0.123
    changed = work / "changed.yaml"
    changed.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = _predict(work, changed)
    assert out.returncode != 0
    assert "refused" in out.stderr and "settings digest" in out.stderr, out.stderr[-3000:]

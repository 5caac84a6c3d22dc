"""Stage `report` on a small synthetic run: real prediction files → evaluate → tables, copies, plots.

The run (``run``, tests/report/conftest.py): three tasks, three experts, four fusion methods. ``shazam``
is missing on surv_brca (a failed method) and mut_tp53 was never evaluated (a skipped task): 8 missing
cells of 21.
"""

from __future__ import annotations

import shutil

import pyarrow.parquet as pq
import pytest
from support.evaluation import ENCODERS, make_config, write_task
from support.evaluation import REPORT_METHODS as METHODS
from support.evaluation import REPORT_TASKS as TASKS

from pathfuse.evaluation.run import evaluate_task
from pathfuse.io import SchemaError, read_parquet
from pathfuse.report.run import TABLES, build_report, expert_curves, report_outputs


def test_every_output_is_written_and_readable(run):
    cfg, written = run
    expected = [p for paths in report_outputs(cfg).values() for p in paths]
    assert sorted(map(str, written)) == sorted(map(str, expected))
    for name in TABLES:
        df, meta = read_parquet(cfg.layout.table(name), schema=f"table:{name}")
        assert (len(df) or name == "external") and meta["missing_cells"] == 8, name  # no external cohort here
    for path in [*report_outputs(cfg)["png"], *report_outputs(cfg)["svg"]]:
        assert path.stat().st_size > 5_000, path
        head = path.read_bytes()[:8]
        assert head.startswith(b"\x89PNG") if path.suffix == ".png" else b"<?xml" in head


def test_figures_drawn_by_two_processes_are_the_same_files(run, monkeypatch):
    """The report job draws its figures on all its threads; the files and their order must not change."""
    cfg, written = run
    before = {p: p.read_bytes() for p in written if p.suffix == ".png"}
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert build_report(cfg) == written
    assert {p: p.read_bytes() for p in before} == before


def test_training_curves_are_read_per_expert_with_none_where_missing(run):
    cfg, _ = run
    curves = expert_curves(cfg, "brca_idc_ilc")
    assert list(curves) == ENCODERS
    trained = curves["demo_vit_b"]
    assert trained is not None and trained["val_loss"].tolist() == [0.7, 0.6, 0.7, 0.65]
    assert curves["demo_vit_a"] is None and curves["demo_vit_c"] is None
    assert [p.stem for p in report_outputs(cfg)["curves"]] == TASKS


def test_summary_counts_missing_cells(run):
    cfg, _ = run
    summary, meta = read_parquet(cfg.layout.table("summary"), schema="table:summary")
    s = summary.set_index("method")
    assert (meta["missing_cells"], meta["expected_cells"]) == (8, 21)
    assert s.loc["shazam", "n_missing"] == 2 and s.loc["logitprod", "n_missing"] == 1
    assert s["n_tasks"].eq(3).all() and s["n_missing"].sum() == 8
    assert s["wins_of"]["logitprod"].endswith("/3")
    ranks, _ = read_parquet(cfg.layout.table("ranks"), schema="table:ranks")
    tp53 = ranks[ranks["task"] == "mut_tp53"]
    assert len(tp53) == 7 and tp53["value"].isna().all() and tp53["status"].eq("missing").all()
    assert set(ranks["family"]) == {"expert", "fuser", "baseline"}  # shazam's family known from brca
    # the strongest synthetic expert is the validation-selected reference on both evaluated tasks
    assert set(ranks.loc[ranks["task"] != "mut_tp53", "reference"]) == {"demo_vit_b"}
    md = cfg.layout.table("summary").with_suffix(".md").read_text()
    assert "**Missing cells: 8 of 21**" in md and "| surv_brca | shazam |" in md


def test_benchmark_has_every_metric_with_ci(run):
    cfg, _ = run
    bench, _ = read_parquet(cfg.layout.table("benchmark"), schema="table:benchmark")
    brca = bench[(bench["task"] == "brca_idc_ilc")]
    assert set(brca["metric"]) == {"auroc", "balanced_accuracy", "macro_f1", "accuracy", "binary_f1"}
    assert set(brca["method"]) == {*ENCODERS, *METHODS}
    ok = brca[brca["status"] == "ok"]
    assert (ok["ci_low"] <= ok["mean"]).all() and (ok["mean"] <= ok["ci_high"]).all()
    assert (ok["pooled_ci_low"] <= ok["pooled"]).all() and (ok["pooled"] <= ok["pooled_ci_high"]).all()
    assert ok["n_test_patients"].eq("60,60").all()
    assert bench.loc[bench["kind"] == "survival", "pooled"].isna().all()  # never pooled across fold bins
    assert ok["sd"].notna().all() and ok["n_folds"].eq(2).all()
    assert bench.loc[(bench["task"] == "surv_brca") & (bench["method"] == "shazam"), "status"].eq("missing").all()


def test_cost_and_gate_weights(run):
    cfg, _ = run
    cost, _ = read_parquet(cfg.layout.table("cost"), schema="table:cost")
    c = cost.set_index("method")
    assert set(c.index) == set(METHODS)
    assert c.loc["shazam", "seconds_ratio"] == pytest.approx(10.0)  # synthetic: 10 s vs 1 s per fold unit
    assert c.loc["logitprod", "seconds_ratio"] == pytest.approx(1.0)
    assert c.loc["shazam", "n_missing"] == 2 and c.loc["logitprod", "n_tasks"] == 2
    gates, _ = read_parquet(cfg.layout.table("gate_weights"), schema="table:gate_weights")
    assert set(gates["method"]) == {"logitprod"}
    present = gates[gates["status"] == "ok"]
    assert set(present["task"]) == {"brca_idc_ilc", "surv_brca"}
    assert present.groupby("task")["weight_mean"].sum().to_numpy() == pytest.approx([1.0, 1.0], abs=1e-5)
    # synthetic gates favour the last expert (Dirichlet 1:2:3), also after averaging survival bins
    for _, rows in present.groupby("task"):
        assert rows.set_index("expert")["weight_mean"].idxmax() == "demo_vit_c"
    assert gates[gates["task"] == "mut_tp53"]["weight_mean"].isna().all()


def test_markdown_and_html_copies(run):
    cfg, _ = run
    ranks_md = cfg.layout.table("ranks").with_suffix(".md").read_text()
    lines = [line for line in ranks_md.splitlines() if line.startswith("| mut_tp53 ")]
    assert lines and lines[0].count("—") >= 7  # the skipped task: every cell marked missing
    assert ranks_md.count("**") >= 4  # winners in bold
    header = next(line for line in ranks_md.splitlines() if line.startswith("| task | metric |"))
    assert header.index("demo_vit_a") < header.index("best_val_expert") < header.index("logitprod")
    html = (cfg.layout.report_dir() / "ranks.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "<table>" in html and "<b>" in html and "**" not in html
    bench_md = cfg.layout.table("benchmark").with_suffix(".md").read_text()
    assert "## brca_idc_ilc (wsi_classification; primary: auroc)" in bench_md
    assert "auroc mean [95% CI]" in bench_md and "auroc POOLED over folds [95% CI]" in bench_md


def test_wrong_schema_version_fails_clearly(run, tmp_path):
    cfg, _ = run
    copy = make_config(tmp_path, TASKS, methods=METHODS)
    shutil.copytree(cfg.layout.root, copy.layout.root)
    path = copy.layout.metrics("brca_idc_ilc")
    table = pq.read_table(path)
    kv = dict(table.schema.metadata)
    kv[b"pathfuse.schema_version"] = b"0"
    pq.write_table(table.replace_schema_metadata(kv), path)
    with pytest.raises(SchemaError, match=r"brca_idc_ilc\.parquet.*version 0"):
        build_report(copy)
    with pytest.raises(SchemaError, match="expected a pathfuse 'table:ranks' table"):
        read_parquet(copy.layout.table("benchmark"), schema="table:ranks")


def test_experts_only_run_still_reports(tmp_path):
    """No fusion method configured (or none finished): tables and placeholder plots, no crash."""
    cfg = make_config(tmp_path, ["brca_idc_ilc"], methods=[])
    write_task(cfg, "brca_idc_ilc", {"demo_vit_a": 0.2, "demo_vit_b": 2.0, "demo_vit_c": 0.6})
    evaluate_task(cfg, "brca_idc_ilc")
    build_report(cfg)
    summary, meta = read_parquet(cfg.layout.table("summary"), schema="table:summary")
    assert summary["method"].tolist()[0] == "demo_vit_b" and meta["missing_cells"] == 0
    for name in ("cost", "gate_weights"):
        df, _ = read_parquet(cfg.layout.table(name), schema=f"table:{name}")
        assert df.empty, name
    assert "No gated fusion method" in cfg.layout.table("gate_weights").with_suffix(".md").read_text()
    assert (cfg.layout.report_dir() / "gate_weights.png").stat().st_size > 1000


def test_no_metrics_at_all_is_an_error(tmp_path):
    cfg = make_config(tmp_path, TASKS, methods=METHODS)
    with pytest.raises(FileNotFoundError, match="run the evaluate rule"):
        build_report(cfg)


"""End-to-end: real Snakemake runs of the reduced demo, from generated slides to tables.

One run serves every test here, and it is the hard case: it is killed with SIGKILL in the
middle (no clean-up at all), unlocked, and resumed with --rerun-incomplete, as README says.
The fixture (``resumed_run``, tests/conftest.py) checks that every output present after the kill
parses (atomic writes); the tests
check that no job Snakemake had seen finish was redone and that the resumed run is a full,
correct run (tables, logs, report, nothing left to do).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from support.reduced_demo import REDUCED_ENCODERS, REDUCED_TASKS, ResumedRun, snakemake_cmd

from pathfuse.config import Config
from pathfuse.encoders.levels import has_levels
from pathfuse.fusion import applicable_methods
from pathfuse.io import read_parquet, read_parquet_meta

pytestmark = pytest.mark.slow
TABLES = ["benchmark", "ranks", "summary", "cost", "gate_weights"]


def test_jobs_finished_before_the_kill_were_recorded(resumed_run):
    experts = [p for p in resumed_run.done_before_kill if p.name == "predictions.parquet"]
    assert len(experts) >= 2, f"expected at least two finished experts before the kill: {experts}"


def test_resume_did_not_redo_finished_jobs(resumed_run):
    redone = [str(p.relative_to(resumed_run.results)) for p, mtime in resumed_run.done_before_kill.items()
              if resumed_run.done_after_resume.get(p) != mtime]
    assert not redone, f"finished outputs were redone after resume: {redone}"
    assert not list(resumed_run.results.rglob(".*.tmp*")), "temporary files left behind"


def test_tables_cover_every_task_and_method(resumed_run):
    tables = resumed_run.results / "tables"
    for name in TABLES:
        assert (tables / f"{name}.parquet").exists(), name
        assert (tables / f"{name}.md").exists(), name
    bench, _ = read_parquet(tables / "benchmark.parquet", schema="table:benchmark")
    assert set(bench["task"]) == set(REDUCED_TASKS)
    assert set(REDUCED_ENCODERS) | {"logitprod", "shazam", "mean_logits"} <= set(bench["method"])
    for col in ("mean", "sd", "ci_low", "ci_high"):
        assert col in bench.columns
    primary = bench[(bench["task"] == "brca_idc_ilc") & (bench["metric"] == "auroc")]
    primary = primary[~primary["note"].fillna("").str.startswith("not applicable")]  # shazam_levels: tiles only
    assert primary["mean"].between(0, 1).all() and len(primary) >= len(REDUCED_ENCODERS) + 3


def test_shazam_levels_runs_on_the_tile_task_and_says_why_not_on_slide_tasks(resumed_run):
    """The demo lists shazam_levels: scored on crc100k, in the cost and gate tables; not applicable elsewhere."""
    tables = resumed_run.results / "tables"
    bench, _ = read_parquet(tables / "benchmark.parquet", schema="table:benchmark")
    levels = bench[bench["method"] == "shazam_levels"].set_index("task")
    assert levels.loc[levels.index == "crc100k", "mean"].notna().all()
    slide = levels[levels.index != "crc100k"]
    assert set(slide.index) == {"brca_idc_ilc", "surv_brca"} and slide["mean"].isna().all()
    assert slide["note"].str.startswith("not applicable: tile tasks only").all()
    cost, _ = read_parquet(tables / "cost.parquet", schema="table:cost")
    row = cost.set_index("method").loc["shazam_levels"]
    assert row["n_tasks"] == 1 and row["n_missing"] == 2 and row["params_mean"] > 0
    gates, _ = read_parquet(tables / "gate_weights.parquet", schema="table:gate_weights")
    ok = gates[(gates["method"] == "shazam_levels") & (gates["status"] == "ok")]
    assert set(ok["task"]) == {"crc100k"} and set(ok["expert"]) == set(REDUCED_ENCODERS)
    levels_files = list(resumed_run.results.glob("features/*/*.safetensors"))
    assert has_levels(levels_files[0])  # the demo asks for tile-dataset levels (embedding.levels: tiles)
    slide_files = list(resumed_run.results.glob("features/*/*/*.safetensors"))
    assert not has_levels(slide_files[0])  # ... and not for slides


def test_every_rule_wrote_its_log(resumed_run):
    logs = resumed_run.results / "logs"
    for rule in ("demo_data", "tile", "tile_index", "embed_slides", "embed_tiles", "expert", "fuse", "evaluate",
                 "report"):
        assert any((logs / rule).glob("*.log")), f"no log for rule {rule}"


def test_second_run_has_nothing_to_do(resumed_run):
    out = subprocess.run(snakemake_cmd(resumed_run.workdir, resumed_run.config, "-n", "--cores", "1"),
                         check=False, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Nothing to be done" in out.stdout + out.stderr


def test_report_html_builds(resumed_run):
    out = subprocess.run(snakemake_cmd(resumed_run.workdir, resumed_run.config, "--report", "results/report.html"),
                         check=False, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    html = (resumed_run.results / "report.html").read_text(errors="replace")
    assert "benchmark" in html.lower() and len(html) > 10_000
    for text in (
        "heatmap.png", "gains.png", "summary.html", "Gain over the best single expert", "Expert training curves"
    ):
        assert text in html, text


# ----------------------------------------------------------------------------- what reruns when
def _planned(run: ResumedRun, config: Path) -> dict[str, int]:
    """Jobs per rule that `snakemake -n` plans for ``config`` on the finished run (empty: none)."""
    out = subprocess.run(snakemake_cmd(run.workdir, config, "-n", "--cores", "1"), check=False,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return _job_stats(out.stdout + out.stderr)


def _job_stats(text: str) -> dict[str, int]:
    """Jobs per rule of Snakemake's "Job stats" table in its output (empty: nothing to do)."""
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)}


def _changed_config(run: ResumedRun, edit) -> Path:
    import yaml

    raw = yaml.safe_load(run.config.read_text())
    edit(raw)
    path = run.workdir / "changed.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _edited(run: ResumedRun, relative: str) -> dict[str, int]:
    """Jobs planned after ``relative`` (under results/) is edited; its bytes and mtime are restored after.

    An edit, not a touch: Snakemake (>= 9.18) keeps a job whose input is newer but has the same
    checksum. A trailing blank line changes the bytes and not what the CSV says.
    """
    path = run.results / relative
    before, content = path.stat(), path.read_bytes()
    try:
        path.write_bytes(content + b"\n")
        return _planned(run, run.config)
    finally:
        path.write_bytes(content)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


SLIDE_TASKS = [t for t in REDUCED_TASKS if t != "crc100k"]


def test_tile_logitprod_lr_reruns_only_the_tile_tasks_fusion(resumed_run):
    def edit(raw):
        raw["fusion"]["logitprod"]["by_kind"]["tile_classification"]["lr"] = 0.5

    assert _planned(resumed_run, _changed_config(resumed_run, edit)) == {"fuse": 1, "evaluate": 1, "report": 1,
                                                                         "all": 1}


def test_a_changed_logitprod_setting_refits_logitprod_alone(resumed_run, tmp_path):
    """Through Snakemake, on a copy of the finished run: the tile task's LogitProd lr changes.

    Only the tile task's fuse job (then its evaluate and the report) runs, and inside it only
    LogitProd is refitted: every other method's file, and every other task's, keeps its bytes
    and mtime; the job's log names the methods it kept.
    """
    work = tmp_path / "run"
    shutil.copytree(resumed_run.workdir, work, symlinks=True)  # copy2: mtimes kept to the nanosecond
    copied = ResumedRun(work, work / resumed_run.config.name, {}, {})

    def edit(raw):
        raw["fusion"]["logitprod"]["by_kind"]["tile_classification"]["lr"] = 0.5

    config = _changed_config(copied, edit)
    files = sorted(copied.results.glob("fusion/*/*/predictions.parquet"))
    experts = sorted(copied.results.glob("experts/*/*/*.parquet"))
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files + experts}
    out = subprocess.run(snakemake_cmd(work, config, "--cores", "2"), check=False, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    assert _job_stats(out.stdout + out.stderr) == {"fuse": 1, "evaluate": 1, "report": 1, "all": 1}

    refitted = copied.results / "fusion/crc100k/logitprod/predictions.parquet"
    assert refitted in before and refitted.read_bytes() != before[refitted][1]
    recorded = read_parquet_meta(refitted, schema="predictions")["settings"]["logitprod"]["by_kind"]
    assert list(recorded) == ["tile_classification"] and recorded["tile_classification"]["lr"] == 0.5
    untouched = [p for p in before if p != refitted]
    run = Config.from_file(config)
    n_files = sum(len(applicable_methods(run.fusion_methods, run.task(t).is_slide_task)) for t in REDUCED_TASKS)
    assert len(untouched) == len(files) - 1 + len(experts) and len(files) == n_files
    changed = [str(p.relative_to(copied.results)) for p in untouched
               if (p.stat().st_mtime_ns, p.read_bytes()) != before[p]]
    assert not changed, f"rewritten although unaffected: {changed}"
    log = (copied.results / "logs/fuse/crc100k.log").read_text()
    kept = [m for m in Config.from_file(config).fusion_methods if m != "logitprod"]
    assert f"task crc100k: up to date, kept: {', '.join(kept)}" in log and "task crc100k: to fit: logitprod" in log


def test_min_tissue_reruns_slide_tiles_and_everything_downstream(resumed_run):
    def edit(raw):
        raw["tiling"]["min_tissue"] = 0.4

    planned = _planned(resumed_run, _changed_config(resumed_run, edit))
    n_experts = len(SLIDE_TASKS) * len(REDUCED_ENCODERS)
    assert planned == {"tile": 2, "tile_index": 1, "embed_slides": 2 * len(REDUCED_ENCODERS), "expert": n_experts,
                       "fuse": len(SLIDE_TASKS), "evaluate": len(SLIDE_TASKS), "report": 1, "all": 1}


def test_one_split_csv_reruns_that_tasks_experts_and_after(resumed_run):
    planned = _edited(resumed_run, "demo/splits/brca_idc_ilc/splits_1.csv")
    assert planned == {"expert": len(REDUCED_ENCODERS), "fuse": 1, "evaluate": 1, "report": 1, "all": 1}


def test_a_label_table_reruns_the_tasks_that_read_it(resumed_run):
    planned = _edited(resumed_run, "demo/labels/surv_brca.csv")
    assert planned == {"expert": len(REDUCED_ENCODERS), "fuse": 1, "evaluate": 1, "report": 1, "all": 1}


def test_n_bootstrap_reruns_evaluation_and_report_only(resumed_run):
    def edit(raw):
        raw["report"]["n_bootstrap"] = 50

    planned = _planned(resumed_run, _changed_config(resumed_run, edit))
    assert planned == {"evaluate": len(REDUCED_TASKS), "report": 1, "all": 1}


def test_doctor_is_all_ok_after_the_run(resumed_run):
    """Before the run the demo's inputs are PENDING; once it made them, every check is OK."""
    import sys

    out = subprocess.run([sys.executable, "-m", "pathfuse.cli", "doctor", "--config", str(resumed_run.config)],
                         cwd=resumed_run.workdir, check=False, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert re.search(r"\d+ OK, 0 PENDING, 0 FAIL", out.stdout), out.stdout[-3000:]


LEARNERS = ("logitprod", "logitprod_converged", "stacking")


def test_learners_on_val_train_no_inner_fold_expert(resumed_run):
    """Every logit-level learner on ``train_on: val``: no inner-fold expert is planned.

    The experts' digest holds the inner-fold count, so every expert reruns (without inner folds),
    exactly as for a run without learners; one learner left on ``oof`` keeps them, and no expert reruns.
    """

    def on(train_on):
        def edit(raw):
            for method in LEARNERS:
                raw["fusion"].setdefault(method, {})["train_on"] = train_on
        return edit

    def without_learners(raw):
        from pathfuse.config import Config

        methods = Config.from_file(resumed_run.config).settings.fusion.methods  # the demo's: the defaults
        raw["fusion"]["methods"] = [m for m in methods if m not in LEARNERS]

    def stacking_on_oof(raw):
        on("val")(raw)
        raw["fusion"]["stacking"]["train_on"] = "oof"

    n_experts = len(REDUCED_TASKS) * len(REDUCED_ENCODERS)
    rerun_all = {"expert": n_experts, "fuse": len(REDUCED_TASKS), "evaluate": len(REDUCED_TASKS), "report": 1,
                 "all": 1}
    assert _planned(resumed_run, _changed_config(resumed_run, on("val"))) == rerun_all
    assert _planned(resumed_run, _changed_config(resumed_run, without_learners)) == rerun_all
    assert "expert" not in _planned(resumed_run, _changed_config(resumed_run, stacking_on_oof))

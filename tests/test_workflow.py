"""End-to-end: real Snakemake runs of the reduced demo, from generated slides to tables.

One run serves every test here, and it is the hard case: it is killed with SIGKILL in the
middle (no clean-up at all), unlocked, and resumed with --rerun-incomplete, as README says.
The fixture checks that every output present after the kill parses (atomic writes); the tests
check that no job Snakemake had seen finish was redone and that the resumed run is a full,
correct run (tables, logs, report, nothing left to do).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from reduced_demo import REDUCED_ENCODERS, REDUCED_TASKS, snakemake_cmd, write_reduced_config

from pathfuse.io import read_parquet

pytestmark = pytest.mark.slow
TABLES = ["benchmark", "ranks", "summary", "cost", "gate_weights"]
OUTPUT_PATTERNS = ["tiles/*/_shards/*.parquet", "features/*/*/_shards/*.parquet", "features/*/*.safetensors",
                   "experts/*/*/predictions.parquet", "fusion/*/*/predictions.parquet"]


@dataclass
class ResumedRun:
    workdir: Path
    config: Path
    done_before_kill: dict[Path, int]
    done_after_resume: dict[Path, int]

    @property
    def results(self) -> Path:
        return self.workdir / "results"


def _finished_outputs(results: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for pat in OUTPUT_PATTERNS for p in results.glob(pat)}


def _reported_finished(log_text: str, workdir: Path) -> set[Path]:
    """Outputs of the jobs Snakemake reported as finished (what it must never redo)."""
    outputs: dict[str, list[str]] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", log_text):
        jobid = re.search(r"^\s+jobid: (\d+)$", block, re.MULTILINE)
        output = re.search(r"^\s+output: (.+)$", block, re.MULTILINE)
        if jobid and output:
            outputs[jobid.group(1)] = [o.strip() for o in output.group(1).split(",")]
    finished = re.findall(r"Finished jobid: (\d+)", log_text)
    return {workdir / o for j in finished for o in outputs.get(j, [])}


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory) -> ResumedRun:
    work = tmp_path_factory.mktemp("e2e")
    config = write_reduced_config(work)
    results = work / "results"
    log = work / "killed_run.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen(snakemake_cmd(work, config, "--cores", "2"), stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)
        deadline = time.time() + 600
        while time.time() < deadline and len(re.findall(r"\(Rule: expert\)", log.read_text())) < 2:
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)  # no clean-up at all: the worst case
        proc.wait()
    present = _finished_outputs(results)
    reported = _reported_finished(log.read_text(), work)
    before = {p: m for p, m in present.items() if p in reported}
    # Present outputs of jobs Snakemake did not see finish are complete too (atomic writes),
    # but Snakemake rightly cannot trust them; --rerun-incomplete redoes those jobs.
    for path in present:
        if path.suffix == ".parquet":
            pd.read_parquet(path)

    subprocess.run(snakemake_cmd(work, config, "--unlock"), capture_output=True, timeout=120, check=True)
    out = subprocess.run(snakemake_cmd(work, config, "--cores", "2", "--rerun-incomplete"),
                         check=False, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    return ResumedRun(work, config, before, _finished_outputs(results))


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
    assert primary["mean"].between(0, 1).all() and len(primary) >= len(REDUCED_ENCODERS) + 3


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

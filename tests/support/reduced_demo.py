"""The reduced demo that the end-to-end tests run (workflow and SLURM tests share it)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[2]

#: The reduced demo every end-to-end test runs: a slide classification, a survival and a tile
#: task (mutation tasks share the slide-classification code path), two encoders.
REDUCED_TASKS = ["brca_idc_ilc", "surv_brca", "crc100k"]
REDUCED_ENCODERS = ["demo_vit_a", "demo_vit_b"]


def write_reduced_config(workdir: Path, **overrides: object) -> Path:
    """Write a small demo config into ``workdir`` (results go to ``workdir/results``).

    Registries are given as absolute paths so Snakemake can run with ``--directory workdir``.
    """
    import yaml

    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    raw["registries"] = {"tasks": str(REPO / "src" / "pathfuse" / "resources" / "tasks.yaml"),
                         "encoders": str(REPO / "src" / "pathfuse" / "resources" / "encoders.yaml")}
    raw["tasks"] = list(REDUCED_TASKS)
    raw["encoders"] = list(REDUCED_ENCODERS)
    # Without the demo's external cohort: tests/workflow/test_external.py adds one to a finished run.
    raw["task_data"] = {t: {k: x for k, x in v.items() if k != "external"} for t, v in raw["task_data"].items()
                        if t in REDUCED_TASKS}
    raw["cohorts"] = {c: v for c, v in raw["cohorts"].items() if c == "demo"}
    raw["tile_datasets"] = {d: v for d, v in raw["tile_datasets"].items()
                            if any(raw["task_data"][t].get("dataset") == d for t in REDUCED_TASKS)}
    raw.setdefault("demo", {}).update(REDUCED_DEMO)
    for key, value in overrides.items():
        raw[key] = value
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


#: Demo size for the reduced runs (keys of src/pathfuse/resources/schemas/sections/demo.schema.yaml).
REDUCED_DEMO: dict[str, object] = {
    "n_cases": 12, "slide_width_px": 2048, "slide_height_px": 1024, "tile_images_per_class": 4,
    "external": {"n_cases": 0},
}


def snakemake_cmd(workdir: Path, config: Path, *extra: str) -> list[str]:
    """The Snakemake command line of an end-to-end test (targets, if any, go in ``extra``)."""
    import sys

    return [sys.executable, "-m", "snakemake", *extra, "-s", str(REPO / "Snakefile"),
            "--directory", str(workdir), "--configfile", str(config)]


OUTPUT_PATTERNS = ["tiles/*/_shards/*.parquet", "features/*/*/_shards/*.parquet", "features/*/*.safetensors",
                   "experts/*/*/predictions.parquet", "fusion/*/*/predictions.parquet", "fusion/*/_methods.parquet"]


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


def run_killed_and_resumed(work: Path) -> ResumedRun:
    """Run the reduced demo in ``work``, SIGKILL it after two experts started, unlock and resume it."""
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

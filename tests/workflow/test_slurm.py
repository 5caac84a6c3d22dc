"""The reduced demo through a real SLURM cluster started on this machine.

tests/slurm/run_local_cluster.sh installs Debian's SLURM and munge if needed, starts a one-node
cluster inside private network and mount namespaces, runs tests/slurm/reduced_demo.sh through
workflow/profiles/slurm, and stops its daemons by PID. Here we check what a user relies on:
the jobs really went through sbatch (job ids, squeue), the profile's grouping held, the tables
equal those of the same workflow run locally, and nothing of the cluster is left running.

Skipped, with the script's reason, where the cluster cannot be set up (not root, no apt-get,
no namespaces). About 2 minutes on 2 cores.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SLURM_DIR = Path(__file__).resolve().parent / "slurm"
CANNOT_SET_UP = 77  # run_local_cluster.sh's exit status when SLURM cannot run here

pytestmark = pytest.mark.slurm


def run_cluster(workdir: Path, *command: str) -> subprocess.CompletedProcess:
    """Run the cluster script (default command: the reduced demo); skip if SLURM cannot run."""
    args = [str(SLURM_DIR / "run_local_cluster.sh"), str(workdir)]
    if command:
        args += ["--", *command]
    proc = subprocess.run(args, check=False, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHON": sys.executable})
    if proc.returncode == CANNOT_SET_UP:
        reasons = [line for line in proc.stderr.splitlines() if "cannot set up SLURM" in line]
        pytest.skip(reasons[-1] if reasons else proc.stderr.strip()[-500:])
    return proc


def processes_matching(needle: str) -> list[str]:
    """Command lines of running processes that contain ``needle``.

    Seen from outside the cluster's namespaces; the daemons carry their scratch config path on the command line.
    """
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmdline and "pytest" not in cmdline:
            found.append(f"{proc.name}: {cmdline}")
    return found


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, object]:
    """The reduced demo through SLURM and, at the same time, the same workflow and profile with the local executor.

    The local run uses the cores the SLURM run leaves idle while it polls.
    """
    work = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "PYTHON": sys.executable}
    with open(work / "local.log", "w") as local_log:
        local = subprocess.Popen([str(SLURM_DIR / "reduced_demo.sh"), "local", str(work / "local_run")],
                                 stdout=local_log, stderr=subprocess.STDOUT, env=env)
        try:
            slurm = run_cluster(work)
            local_status = local.wait(timeout=600)
        finally:
            if local.poll() is None:
                local.kill()
                local.wait()
    log = (work / "workflow.log").read_text() if (work / "workflow.log").exists() else ""
    assert slurm.returncode == 0, f"{slurm.stderr[-3000:]}\n--- workflow.log ---\n{log[-5000:]}"
    assert local_status == 0, (work / "local.log").read_text()[-5000:]
    print(slurm.stderr)  # job ids and timing, shown with pytest -s or -rA
    return {"work": work, "stderr": slurm.stderr, "log": log}


def submissions(log: str) -> list[tuple[str, str]]:
    """(SLURM job id, rule_<name> or group_<name>) of every sbatch submission in the log."""
    return re.findall(r"submitted with SLURM jobid (\d+) \(log: [^)]*/slurm_logs/((?:rule|group)_\w+)/", log)


def test_jobs_went_through_sbatch_and_completed(runs):
    jobs = submissions(runs["log"])
    assert jobs, "no sbatch submissions in the workflow log"
    squeue = (runs["work"] / "squeue.txt").read_text()
    states = dict(re.findall(r"^(\d+) pathfuse_\S+ (\w+)", squeue, re.MULTILINE))
    for job_id, _ in jobs:
        assert states.get(job_id) == "COMPLETED", f"SLURM job {job_id}: {states.get(job_id)}\n{squeue}"


def test_profile_grouping_and_rules_reach_slurm(runs):
    kinds = [kind for _, kind in submissions(runs["log"])]
    for rule in ("rule_tile", "rule_embed_slides", "rule_embed_tiles"):
        assert rule in kinds, f"{rule} never went to SLURM: {kinds}"
    # Every expert of the reduced demo fits one group job (group-components: experts: 8), and
    # fuse + evaluate of all its tasks another: short jobs do not reach SLURM one by one.
    assert kinds.count("group_experts_expert") == 1, kinds
    assert sum(k.startswith("group_post") for k in kinds) == 1, kinds
    assert "rule_expert" not in kinds and "rule_fuse" not in kinds and "rule_evaluate" not in kinds


def _tables(results: Path) -> dict[str, pd.DataFrame]:
    files = sorted(results.glob("tables/*.parquet")) + sorted(results.glob("metrics/*.parquet"))
    return {str(p.relative_to(results)): pd.read_parquet(p) for p in files}


def _comparable(frame: pd.DataFrame) -> pd.DataFrame:
    """Drop timing columns (wall-clock differs between runs by nature)."""
    timing = [c for c in frame.columns if "second" in c.lower() or c.lower() in {"time_s", "wall_time"}]
    return frame.drop(columns=timing).reset_index(drop=True)


def test_tables_equal_a_local_run(runs):
    slurm = _tables(runs["work"] / "slurm_run" / "results")
    local = _tables(runs["work"] / "local_run" / "results")
    assert "tables/benchmark.parquet" in slurm, sorted(slurm)
    assert slurm.keys() == local.keys()
    for name in slurm:
        a, b = _comparable(slurm[name]), _comparable(local[name])
        assert list(a.columns) == list(b.columns), name
        for column in a.columns:
            if pd.api.types.is_float_dtype(a[column]):
                np.testing.assert_array_equal(a[column].to_numpy(), b[column].to_numpy(), err_msg=f"{name}:{column}")
            else:
                assert a[column].astype(str).tolist() == b[column].astype(str).tolist(), f"{name}:{column}"


def test_daemons_stopped_and_host_untouched(runs):
    assert "cluster up: munged, slurmctld, slurmd" in runs["stderr"]
    assert "stopped daemons" in runs["stderr"]
    assert not processes_matching(str(runs["work"] / "cluster")), "a daemon outlived the script"
    # Our slurm.conf was bind-mounted in a private mount namespace, never written to /etc.
    host_conf = Path("/etc/slurm/slurm.conf")
    assert not host_conf.exists() or "pathfuse-test" not in host_conf.read_text()


def test_daemons_and_jobs_stopped_when_the_workflow_fails(tmp_path):
    # A job still running when the workflow fails: it must end with the cluster.
    job = "sleep 28713"  # an unusual duration, to recognise the job's process
    proc = run_cluster(tmp_path, "sh", "-c", f"sbatch --output=/dev/null --wrap '{job}' && sleep 2 && exit 3")
    assert proc.returncode == 3, proc.stderr
    assert "stopped daemons" in proc.stderr
    assert not processes_matching(str(tmp_path / "cluster")), "a daemon outlived the failed run"
    assert not processes_matching(job), "the SLURM job outlived the cluster"

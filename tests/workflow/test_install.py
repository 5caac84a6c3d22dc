"""A non-editable install carries everything: schemas, registries and the workflow itself.

The checkout is copied, installed (no dependencies: this environment has them) into a folder of
its own, and the copy's ``src/`` deleted, so nothing can come from a source tree. Then, from an
unrelated folder, ``pathfuse check-config`` validates the demo config and Snakemake plans the
demo from ``pathfuse workflow-path``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.reduced_demo import REPO

pytestmark = pytest.mark.slow
IGNORED = shutil.ignore_patterns(".git", ".venv", "results", "build", "*.egg-info", "__pycache__", ".snakemake",
                                 ".pytest_cache")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("install")
    checkout, target = root / "checkout", root / "site"
    shutil.copytree(REPO, checkout, ignore=IGNORED)
    out = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                          "--target", str(target), str(checkout)], capture_output=True, text=True, timeout=600,
                         check=False)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    shutil.rmtree(checkout / "src")
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    return {"site": target, "cwd": elsewhere}


def _run(installed: dict[str, Path], *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(installed["site"])}
    return subprocess.run([sys.executable, *args], cwd=installed["cwd"], env=env, capture_output=True, text=True,
                          timeout=600, check=False)


def test_the_installed_package_is_the_one_imported(installed):
    out = _run(installed, "-c", "import pathfuse; print(pathfuse.__file__)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith(str(installed["site"]))


def test_check_config_runs_from_another_folder(installed):
    out = _run(installed, "-m", "pathfuse.cli", "check-config")
    assert out.returncode == 0, out.stderr[-3000:]
    assert '"demo_vit_a"' in out.stdout  # validated against the packaged schemas and registries
    where = _run(installed, "-c", "from pathfuse import resources; from pathfuse.config import Config; "
                 "cfg = Config.from_file(resources.demo_config()); print(cfg.registry_path('tasks'))")
    assert where.stdout.strip().startswith(str(installed["site"])), where.stderr


def test_the_installed_workflow_plans_the_demo(installed):
    snakefile = _run(installed, "-m", "pathfuse.cli", "workflow-path").stdout.strip()
    assert snakefile == str(installed["site"] / "pathfuse" / "bundled_workflow" / "Snakefile")
    out = _run(installed, "-m", "snakemake", "-n", "--cores", "1", "-s", snakefile)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "demo_data" in out.stdout and "report" in out.stdout

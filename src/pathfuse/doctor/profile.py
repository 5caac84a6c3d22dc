"""SLURM profile check: the workflow profile is ready for a cluster run.

It has every setting a cluster run needs, and the environment variables it reads are set where
they must be.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import yaml

from pathfuse.doctor.rows import FAIL, OK, Row

CHECK = "slurm profile"
#: Settings without which the plugin either cannot submit or silently loops (see the profile's comments).
REQUIRED = ("executor", "jobs", "latency-wait", "default-resources", "set-resources", "slurm-status-command")
GPU_RULES = ("embed_slides", "embed_tiles")


def check_profile(path: Path) -> list[Row]:
    """Rows for the profile folder (``config.yaml``/``profile.yaml`` inside) or file ``path``."""
    files = [path] if path.is_file() else [path / n for n in ("profile.yaml", "config.yaml") if (path / n).is_file()]
    if not files:
        return [Row(CHECK, str(path), FAIL, "no profile.yaml or config.yaml found",
                    "pass the profile folder, e.g. --profile workflow/profiles/slurm")]
    try:
        profile = yaml.safe_load(files[0].read_text()) or {}
    except yaml.YAMLError as err:
        return [Row(CHECK, str(files[0]), FAIL, f"not valid YAML: {err}", "fix the YAML syntax")]
    rows = [_settings_row(files[0], profile)]
    rows += [_gpu_row(files[0], profile, rule) for rule in GPU_RULES]
    rows.append(_environment_row())
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        rows.append(Row(CHECK, "plugin", FAIL, "snakemake-executor-plugin-slurm is not installed",
                        'pip install -e ".[slurm]"'))
    return rows


def _settings_row(path: Path, profile: dict) -> Row:
    missing = [k for k in REQUIRED if k not in profile]
    defaults = profile.get("default-resources") or {}
    missing += [f"default-resources.{k}" for k in ("mem_mb", "runtime") if k not in defaults]
    if profile.get("executor") not in (None, "slurm"):
        missing.append(f"executor: slurm (found {profile.get('executor')!r})")
    if missing:
        return Row(CHECK, str(path), FAIL, f"missing setting(s): {', '.join(missing)}",
                   "copy them from workflow/profiles/slurm/config.yaml (each is commented there)")
    return Row(CHECK, str(path), OK, f"executor slurm, jobs {profile['jobs']}, status via "
               f"{profile['slurm-status-command']}")


def _gpu_row(path: Path, profile: dict, rule: str) -> Row:
    resources = (profile.get("set-resources") or {}).get(rule) or {}
    lacking = [k for k in ("mem_mb", "runtime", "gpu") if k not in resources]
    if lacking:
        return Row(CHECK, rule, FAIL, f"set-resources.{rule} lacks {lacking}",
                   f"give {rule} a GPU (gpu: N), host memory (mem_mb) and a time limit (runtime)")
    return Row(CHECK, rule, OK, f"mem_mb {resources['mem_mb']}, runtime {resources['runtime']} min, "
               f"gpu {resources['gpu']}")


def _environment_row() -> Row:
    env = {k: os.environ.get(k) for k in ("PATHFUSE_SLURM_ACCOUNT", "PATHFUSE_SLURM_PARTITION",
                                          "PATHFUSE_SLURM_GPU_PARTITION", "PATHFUSE_SLURM_GPUS")}
    gpus = env["PATHFUSE_SLURM_GPUS"] or "1"
    if not gpus.isdigit():
        return Row(CHECK, "environment", FAIL, f"PATHFUSE_SLURM_GPUS={gpus!r} is not a whole number",
                   "export PATHFUSE_SLURM_GPUS=1 (GPUs per embedding job; 0 on a CPU-only cluster)")
    shown = ", ".join(f"{k.removeprefix('PATHFUSE_SLURM_').lower()}={v or 'cluster default'}"
                      for k, v in env.items() if k != "PATHFUSE_SLURM_GPUS")
    return Row(CHECK, "environment", OK, f"{shown}, gpus={gpus}")

"""Snakemake shim: run one pathfuse stage with the job's config, unit of work and log file.

Every rule points its `script:` here; `params.stage` names the stage (pathfuse.cli.STAGES)
and `params.kwargs` its unit of work. `<repo>/src` goes on sys.path so a conda env only needs
the dependencies, not an installed pathfuse.
"""

import os
import sys
from pathlib import Path

snakemake = globals()["snakemake"]  # injected by Snakemake's script directive
# Threads first: torch reads them when it is imported.
os.environ.setdefault("OMP_NUM_THREADS", str(snakemake.threads))
os.environ.setdefault("MKL_NUM_THREADS", str(snakemake.threads))
sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1] / "src"))

from pathfuse.config import Config
from pathfuse.logs import setup_logging
from pathfuse.stages import run_stage

setup_logging(snakemake.log[0] if snakemake.log else None)
run_stage(snakemake.params.stage, Config.from_dict(snakemake.config), dict(snakemake.params.kwargs))

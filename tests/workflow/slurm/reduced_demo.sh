#!/usr/bin/env bash
# The reduced pathfuse demo of the end-to-end tests (tests/support/reduced_demo.py: write_reduced_config)
# made smaller still by tests/workflow/slurm/slurm_demo.yaml, run through the SLURM workflow profile with
# the SLURM or the local executor.
#
#   tests/workflow/slurm/reduced_demo.sh slurm RUN_DIR [snakemake args...]   # needs a SLURM cluster
#   tests/workflow/slurm/reduced_demo.sh local RUN_DIR [snakemake args...]   # same profile, --executor local
#
# Both modes use workflow/profiles/slurm, so threads, resources and groups are the same; only
# where the jobs run differs, and the tables must not (seeds follow the unit of work).
# RUN_DIR becomes Snakemake's working directory (--directory): the config is written there
# (RUN_DIR/config.yaml, registries as absolute paths) and its relative paths (results/, the
# demo data) resolve inside it. Snakemake itself is started from the repository root.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
PYTHON=${PYTHON:-python3}
[[ $# -ge 2 ]] || { echo "usage: $0 slurm|local RUN_DIR [snakemake args...]" >&2; exit 2; }
MODE=$1
RUN_DIR=$(mkdir -p "$2" && cd "$2" && pwd)
shift 2

case "$MODE" in
    # Poll after 2 s instead of the profile's 20: the demo's jobs take seconds. Keep the job
    # logs (RUN_DIR/.snakemake/slurm_logs) for inspection. The test cluster has no GPUs:
    # embedding jobs ask for none (the profile's PATHFUSE_SLURM_GPUS).
    slurm) EXECUTOR=(--slurm-init-seconds-before-status-checks 2 --slurm-keep-successful-logs)
           export PATHFUSE_SLURM_GPUS=0 ;;
    local) EXECUTOR=(--executor local --cores 2) ;;
    *) echo "$0: mode must be slurm or local, not $MODE" >&2; exit 2 ;;
esac

cd "$REPO"
PYTHONPATH="$REPO/tests${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -c \
    'import sys; from pathlib import Path; from support.reduced_demo import write_reduced_config; write_reduced_config(Path(sys.argv[1]))' \
    "$RUN_DIR"
exec "$PYTHON" -m snakemake \
    --workflow-profile workflow/profiles/slurm "${EXECUTOR[@]}" \
    --snakefile "$REPO/Snakefile" --directory "$RUN_DIR" \
    --configfile "$RUN_DIR/config.yaml" "$REPO/tests/workflow/slurm/slurm_demo.yaml" \
    "$@"

"""Preflight checks of a run: ``pathfuse doctor`` and the workflow's start-up validation.

Every check family is a module with one ``check_*(cfg, *, deep) -> list[Row]`` function, so the
CLI and the Snakefile's start-up validation run the same code: ``run_checks(cfg, deep=False)``
does only cheap file-existence checks (fit for every workflow start), ``deep=True`` also hashes
and loads the weights, runs a forward pass, opens sample slides and parses every table (the
doctor command, before a long run). A check never raises for a problem it can describe: it
returns a FAIL row naming the fix.
"""

from __future__ import annotations

from pathlib import Path

from pathfuse.config import Config
from pathfuse.doctor.levels import check_levels
from pathfuse.doctor.profile import check_profile
from pathfuse.doctor.rows import FAIL, OK, PENDING, Row, render_table
from pathfuse.doctor.slides import check_cohorts
from pathfuse.doctor.tables import check_task_tables

__all__ = ["FAIL", "OK", "PENDING", "Row", "check_inputs", "doctor", "render_table", "run_checks"]


def run_checks(cfg: Config, *, deep: bool, profile: str | Path | None = None) -> list[Row]:
    """All checks of a run config (and of a SLURM profile folder or file when given)."""
    from pathfuse.doctor.encoders import check_encoders  # torch: only when the doctor itself runs

    rows = check_encoders(cfg, deep=deep) + check_inputs(cfg, deep=deep)
    if profile is not None:
        rows += check_profile(Path(profile))
    return rows


def check_inputs(cfg: Config, *, deep: bool) -> list[Row]:
    """The input checks without torch: cohorts (slides, BYO bags) and task tables.

    The Snakefile runs these with ``deep=False`` at every start (:meth:`pathfuse.plan.Planner.check`),
    so a run stops on the same FAIL rows, with the same fixes, that ``pathfuse doctor`` prints.
    """
    return check_cohorts(cfg, deep=deep) + check_task_tables(cfg, deep=deep) + check_levels(cfg, deep=deep)


def doctor(cfg: Config, profile: str | Path | None = None, *, deep: bool = True) -> int:
    """Print one table of every check; exit status 1 if any row FAILs, else 0."""
    rows = run_checks(cfg, deep=deep, profile=profile)
    print(render_table(rows))
    return 1 if any(r.status == FAIL for r in rows) else 0

"""Draw the report's figures in parallel: the report is the run's last job, its cores are free."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

#: A figure to draw: a function writing its files and returning their paths, with its arguments.
Figure = tuple[Callable[..., list[Path]], tuple[Any, ...]]


def draw(figures: list[Figure], workers: int = 1) -> list[Path]:
    """Draw every figure (``(function, args)``, each writing its own files) on ``workers`` processes.

    The report is the run's last job, so its cores would otherwise idle while ~1 s of drawing per
    figure runs one after the other (figures are most of the report's time). Each figure is its
    own file, so the order of drawing changes nothing in them; paths come back in list order.
    """
    if workers <= 1 or len(figures) <= 1:
        return [path for function, args in figures for path in function(*args)]
    with ProcessPoolExecutor(max_workers=min(workers, len(figures))) as pool:
        futures = [pool.submit(function, *args) for function, args in figures]
        return [path for future in futures for path in future.result()]


def job_threads() -> int:
    """The job's thread budget: the shim exports Snakemake's ``threads`` as OMP_NUM_THREADS (1 if unset)."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "1")))
    except ValueError:
        return 1

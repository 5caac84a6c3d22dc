"""Per-job logging: everything a stage prints goes to its rule's log file."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path


def setup_logging(log_path: str | os.PathLike[str] | None = None, level: int = logging.INFO) -> None:
    """Send logging, warnings, tqdm bars and stray prints to ``log_path`` (or stderr).

    Snakemake gives each job a log file; redirecting the process's stdout/stderr there too
    means a crash traceback and progress bars land next to the stage's own messages.
    """
    if log_path is not None:
        path = Path(log_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        stream = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
        sys.stdout = stream
        sys.stderr = stream
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    logging.captureWarnings(True)

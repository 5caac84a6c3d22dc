"""The report tests' run, built once for the folder: its report is what the tests read."""

from __future__ import annotations

import pytest
from support.evaluation import report_run

from pathfuse.report.run import build_report


@pytest.fixture(scope="package")
def run(tmp_path_factory):
    """(config, every path the report wrote) of :func:`support.evaluation.report_run`."""
    cfg = report_run(tmp_path_factory.mktemp("report"))
    return cfg, build_report(cfg)

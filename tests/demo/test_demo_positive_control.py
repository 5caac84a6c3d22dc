"""The full demo as a positive control for fusion (docs/demo.md), checked on a finished run.

The properties need the full demo (84 patients, 42 per test fold, all 22 tasks, three
encoders): the reduced demo that CI runs (12 patients, test folds of 4) cannot show them. So
these tests are marked ``demo``, which the default options deselect (pyproject.toml), and read
the tables of a run made beforehand. Run them after README line 1 with

    python -m pytest -m demo tests/test_demo_positive_control.py

or point ``PATHFUSE_DEMO_RUN`` at the ``--directory`` of another run (the folder that holds
``results/``). Without a finished demo run they skip and say why.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.demo

REPO = Path(__file__).resolve().parents[2]
LOGIT_LEVEL = ("logitprod", "stacking", "mean_logits")
MIN_TEST_PATIENTS = 40


@pytest.fixture(scope="module")
def run() -> Path:
    root = Path(os.environ.get("PATHFUSE_DEMO_RUN", REPO)) / "results"
    for needed in ("tables/ranks.parquet", "tables/summary.parquet", "demo/demo.done"):
        if not (root / needed).is_file():
            pytest.skip(f"no finished full demo run: {root / needed} is missing (run `snakemake --cores all`, "
                        "or set PATHFUSE_DEMO_RUN to the run's directory)")
    fingerprint = json.loads((root / "demo" / "demo.done").read_text())["fingerprint"]
    if fingerprint["n_cases"] < 2 * MIN_TEST_PATIENTS:
        pytest.skip(f"{root} holds a reduced demo ({fingerprint['n_cases']} cases), not the full one")
    return root


@pytest.fixture(scope="module")
def ranks(run: Path) -> pd.DataFrame:
    return pd.read_parquet(run / "tables" / "ranks.parquet")


def chance(task: str, metric: str, n_classes: int) -> float:
    """What a predictor without signal scores on the primary metric."""
    if metric == "balanced_accuracy":
        return 1.0 / n_classes
    assert metric in ("auroc", "c_index"), f"{task}: no chance level known for {metric}"
    return 0.5


def test_slide_tasks_have_at_least_40_test_patients_per_fold(run):
    splits = sorted((run / "demo" / "splits").glob("*/splits_*.csv"))
    assert splits
    for path in splits:
        test = pd.read_csv(path)["test"].dropna()
        assert test.nunique() >= MIN_TEST_PATIENTS, f"{path}: {test.nunique()} test patients"


def test_a_logit_level_method_beats_the_best_expert_on_most_tasks(ranks, run):
    summary = pd.read_parquet(run / "tables" / "summary.parquet").set_index("method")
    wins = {}
    for method in LOGIT_LEVEL:
        gains = ranks.loc[ranks["method"] == method, "gain"].dropna()
        wins[method] = (int((gains > 0).sum()), len(gains), float(summary["mean_gain"][method]))
    best = max(wins, key=lambda m: wins[m][0])
    positive, paired, mean_gain = wins[best]
    assert positive > paired / 2 and mean_gain > 0, f"gain > 0 on (tasks, of, mean gain): {wins}"


def test_every_expert_is_above_chance_on_most_tasks(ranks, run):
    from pathfuse.config import Config

    cfg = Config.from_file(REPO / "config" / "config.yaml")
    experts = ranks[(ranks["family"] == "expert") & ranks["value"].notna()]
    assert experts["method"].nunique() >= 3
    for method, rows in experts.groupby("method"):
        above = [row.value > chance(row.task, row.metric, len(cfg.task(row.task).classes or [0, 1]))
                 for row in rows.itertuples()]
        assert sum(above) > len(above) / 2, f"{method}: above chance on {sum(above)}/{len(above)} tasks"


def test_no_method_repeats_a_baseline_on_every_task(ranks):
    values = ranks.pivot_table(index="task", columns="method", values="value").round(9)
    baselines = set(ranks.loc[ranks["family"] == "baseline", "method"])
    methods = set(ranks.loc[ranks["family"].isin(["fuser", "baseline"]), "method"])
    for method in methods:
        for baseline in baselines - {method}:
            both = values[[method, baseline]].dropna()
            assert len(both) == 0 or not (both[method] == both[baseline]).all(), \
                f"{method} equals {baseline} on all {len(both)} tasks"

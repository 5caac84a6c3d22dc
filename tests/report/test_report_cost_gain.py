"""Cost accounting by the logits each method read, and the cost-against-gain picture with its Pareto front."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from support.synthetic import TASK_OF_KIND, SyntheticTask, fast_fusion_settings, write_synthetic_task

from pathfuse.fusion.run import fuse_task
from pathfuse.io import read_parquet, write_parquet
from pathfuse.report import fusion_plots, fusion_tables
from pathfuse.report.run import expert_seconds, fusion_records


def test_inner_fold_experts_are_charged_only_to_the_methods_that_read_them(tmp_path):
    """LogitProd on val in a run whose stacking asked for out-of-fold rows: stacking pays them all."""
    task = TASK_OF_KIND["mutation"]
    fusion = {**fast_fusion_settings(), "methods": ["logitprod", "stacking", "mean_logits"]}
    fusion["logitprod"].update(train_on="val", val_folds=2, val_corr_weights=[0.1], val_weight_decays=[1e-4])
    cfg = write_synthetic_task(tmp_path, SyntheticTask(task=task, n_samples=60, n_folds=2), fusion,
                               with_features=False)
    for enc in cfg.task(task).encoders:  # the expert jobs' timings: 2 s outer, 6 s inner per fold
        path = cfg.layout.expert_predictions(task, enc)
        df, meta = read_parquet(path, schema="predictions")
        meta["folds"] = {f: {**info, "train_seconds": 2.0, "inner_seconds": 6.0} for f, info in meta["folds"].items()}
        write_parquet(df, path, schema="predictions", meta=meta)
    fuse_task(cfg, task)
    cost, _ = fusion_records(cfg)
    by = cost.set_index(["method", "fold"])
    n_experts = len(cfg.task(task).encoders)
    for fold in (0, 1):
        assert by.loc[("logitprod", fold), "inner_expert_seconds"] == 0.0
        assert by.loc[("logitprod", fold), "required_expert_seconds"] == 0.0
        assert by.loc[("stacking", fold), "inner_expert_seconds"] == pytest.approx(6.0 * n_experts)
        assert by.loc[("mean_logits", fold), "required_expert_seconds"] == 0.0
    assert sum(expert_seconds(cfg, task, cfg.task(task).encoders, "train_seconds").values()) == \
        pytest.approx(2 * 2.0 * n_experts)


def _ranks(gains: dict[str, list[float]], family: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame([{"task": f"t{i}", "method": m, "family": family[m], "gain": g}
                         for m, values in gains.items() for i, g in enumerate(values)])


FAMILY = {"cheap": "baseline", "costly": "fuser", "dominated": "fuser", "oracle_expert": "oracle"}


def _cost() -> pd.DataFrame:
    return pd.DataFrame({"method": list(FAMILY), "family": list(FAMILY.values()),
                         "total_seconds_standalone": [0.01, 50.0, 80.0, 0.02]})


def test_cost_gain_points_mean_gain_ci_across_tasks_and_pareto_front():
    gains = {"cheap": [0.01, 0.03, 0.02], "costly": [0.04, 0.06, 0.05], "dominated": [0.00, 0.02, 0.01],
             "oracle_expert": [0.2, 0.3, 0.25]}
    points = fusion_tables.cost_gain_points(_cost(), _ranks(gains, FAMILY), 0.95).set_index("method")
    assert points.loc["costly", "gain_points"] == pytest.approx(5.0)
    half = stats.t.ppf(0.975, 2) * 1.0 / np.sqrt(3)  # sd of (4, 6, 5) points is 1
    assert points.loc["costly", "ci_high"] - points.loc["costly", "gain_points"] == pytest.approx(half)
    assert points["pareto"].to_dict() == {"cheap": True, "costly": True, "dominated": False, "oracle_expert": False}


def test_cost_gain_figure_is_drawn(tmp_path):
    gains = {"cheap": [0.01, 0.03], "costly": [0.04, 0.06], "dominated": [0.0, 0.02], "oracle_expert": [0.2, 0.3]}
    written = fusion_plots.cost_gain(_cost(), _ranks(gains, FAMILY), 120.0, 0.95, tmp_path / "cost_gain")
    assert [p.suffix for p in written] == [".png", ".svg"] and all(p.stat().st_size > 1000 for p in written)
    empty = fusion_plots.cost_gain(_cost().iloc[:0], _ranks(gains, FAMILY), 0.0, 0.95, tmp_path / "empty")
    assert all(p.exists() for p in empty)  # a placeholder says why there is nothing to draw

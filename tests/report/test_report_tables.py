"""Report tables on hand-made metrics tables: ranks, ties, wins, gains, missing cells, cost, gates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pathfuse.evaluation.table import DELTA_PREFIX, metrics_frame
from pathfuse.report import fusion_tables, tables

FAMILY = {"A": "expert", "B": "expert", "F": "fuser", "O": "oracle"}


def _row(frame: pd.DataFrame, task: str, method: str) -> pd.Series:
    """The (task, method) row of a table indexed by both.

    A one-row list lookup, because pandas-stubs type ``frame.loc[(task, method)]`` as a cell.
    """
    return frame.loc[[(task, method)]].iloc[0]


def _rows(task: str, method: str, value: float | None, metric: str = "auroc") -> list[dict]:
    """Metrics rows of one cell: two folds, their mean and a pooled row (or missing cells).

    The folds are at value ∓ 0.01, the mean row at value with CI ± 0.05 and the pooled row at value
    with CI ± 0.06, so each statistic can be told apart in the tables built from them.
    """
    base = {"task": task, "kind": "mutation", "method": method, "family": FAMILY[method],
            "encoder": method if FAMILY[method] == "expert" else None, "split": "test", "metric": metric,
            "reference": None, "p_value": np.nan, "n_undefined": 0}
    if value is None:
        return [{**base, "fold": f, "statistic": s, "value": np.nan, "ci_low": np.nan, "ci_high": np.nan,
                 "n_samples": 0, "n_patients": 0, "status": "missing", "note": "no prediction file"}
                for f, s in ((0, "fold"), (1, "fold"), (-1, "mean"))]
    folds = [{**base, "fold": f, "statistic": "fold", "value": value + d, "ci_low": np.nan, "ci_high": np.nan,
              "n_samples": 50, "n_patients": 50, "status": "ok", "note": ""} for f, d in ((0, -0.01), (1, 0.01))]
    return folds + [{**base, "fold": -1, "statistic": s, "value": value, "ci_low": value - w,
                     "ci_high": value + w, "n_samples": 100, "n_patients": 100, "status": "ok", "note": ""}
                    for s, w in (("mean", 0.05), ("pooled", 0.06))]


def _delta(task: str, method: str, diff: float, low: float, high: float, ref: str, metric: str = "auroc") -> dict:
    return {"task": task, "kind": "mutation", "method": method, "family": FAMILY[method], "encoder": None,
            "fold": -1, "statistic": "mean", "split": "test", "metric": DELTA_PREFIX + metric, "value": diff,
            "ci_low": low, "ci_high": high, "n_samples": 100, "n_patients": 100, "n_undefined": 0, "status": "ok",
            "note": "", "reference": ref, "p_value": 0.01}


#: t1: F best; t2: A, B, F tied; t3: F missing; the oracle O is listed but never ranked.
VALUES = {
    ("t1", "A"): 0.70, ("t1", "B"): 0.80, ("t1", "F"): 0.85, ("t1", "O"): 0.99,
    ("t2", "A"): 0.75, ("t2", "B"): 0.75, ("t2", "F"): 0.75,
    ("t3", "A"): 0.60, ("t3", "B"): 0.65, ("t3", "F"): None,
}
PRIMARY = {"t1": "auroc", "t2": "auroc", "t3": "auroc"}


@pytest.fixture()
def hand_made() -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = [r for (t, m), v in VALUES.items() for r in _rows(t, m, v)]
    rows += [_delta("t1", "F", 0.05, 0.01, 0.09, "B"), _delta("t1", "A", -0.10, -0.15, -0.05, "B"),
             _delta("t1", "B", 0.0, 0.0, 0.0, "B"), _delta("t2", "F", 0.0, -0.02, 0.02, "A")]
    metrics = metrics_frame(rows)
    expected = metrics.drop_duplicates(["task", "method"])[["task", "kind", "method", "family", "encoder"]]
    return metrics, expected


def _ranks(metrics, expected, **kw) -> pd.DataFrame:
    bench = tables.benchmark_table(metrics)
    return tables.ranks_table(bench, metrics, expected, PRIMARY, **kw).set_index(["task", "method"])


def test_benchmark_mean_sd_ci_and_status(hand_made):
    metrics, _ = hand_made
    bench = tables.benchmark_table(metrics).set_index(["task", "method"])
    row = _row(bench, "t1", "B")
    assert row["mean"] == pytest.approx(0.80) and row["sd"] == pytest.approx(0.02 / np.sqrt(2))
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((0.75, 0.85))
    assert (row["pooled"], row["pooled_ci_low"], row["pooled_ci_high"]) == pytest.approx((0.80, 0.74, 0.86))
    assert (row["n_folds"], row["n_folds_expected"], row["n_samples"], row["status"]) == (2, 2, 100, "ok")
    assert row["n_test_patients"] == "50,50" and row["undefined_folds"] == ""
    miss = _row(bench, "t3", "F")
    assert miss["status"] == "missing" and np.isnan(miss["mean"]) and miss["n_folds"] == 0
    assert "no prediction file" in miss["note"]
    assert not any(bench.index.get_level_values("method") == "delta")  # paired rows are not metrics


def test_incomplete_folds_give_no_mean(hand_made):
    metrics, _ = hand_made
    hole = (metrics["task"] == "t1") & (metrics["method"] == "A") & (metrics["fold"] == 1)
    metrics.loc[hole, ["value", "status"]] = [np.nan, "missing"]
    row = _row(tables.benchmark_table(metrics).set_index(["task", "method"]), "t1", "A")
    assert row["status"] == "incomplete" and np.isnan(row["mean"]) and row["n_folds"] == 1


def test_ranks_ties_and_missing_cell(hand_made):
    ranks = _ranks(*hand_made)
    assert ranks.loc[("t1", "F"), "rank"] == 1 and ranks.loc[("t1", "B"), "rank"] == 2
    assert ranks.loc[("t1", "A"), "rank"] == 3
    assert np.isnan(ranks["rank"][("t1", "O")]) and not ranks.loc[("t1", "O"), "is_first"]  # oracle unranked
    for m in "ABF":  # a three-way tie: average rank 2, and all three are first
        assert ranks.loc[("t2", m), "rank"] == 2 and ranks.loc[("t2", m), "is_first"]
    assert np.isnan(ranks["value"][("t3", "F")]) and np.isnan(ranks["rank"][("t3", "F")])
    assert ranks.loc[("t3", "F"), "status"] == "missing" and not ranks.loc[("t3", "F"), "is_first"]
    assert ranks.loc[("t3", "B"), "rank"] == 1 and ranks.loc[("t3", "A"), "rank"] == 2
    assert ranks.loc[("t3", "B"), "n_ranked"] == 2 and ranks.loc[("t1", "F"), "n_ranked"] == 3


def test_ranks_on_pooled_value_and_with_oracle_competing(hand_made):
    metrics, expected = hand_made
    pooled = (metrics["task"] == "t2") & (metrics["method"] == "A") & (metrics["fold"] == -1) \
        & (metrics["metric"] == "auroc")
    metrics.loc[pooled, "value"] = 0.76  # pooled breaks the tie that the fold means have
    ranks = _ranks(metrics, expected, statistic="pooled", rank_families=["expert", "fuser", "oracle"])
    assert ranks.loc[("t2", "A"), "rank"] == 1 and ranks.loc[("t2", "A"), "is_first"]
    assert not ranks.loc[("t2", "B"), "is_first"] and ranks.loc[("t2", "B"), "rank"] == 2.5
    assert ranks.loc[("t1", "O"), "rank"] == 1 and not ranks.loc[("t1", "F"), "is_first"]


def test_gains_and_significance(hand_made):
    ranks = _ranks(*hand_made)
    f1 = _row(ranks, "t1", "F")
    assert (f1["gain"], f1["gain_ci_low"], f1["gain_ci_high"]) == pytest.approx((0.05, 0.01, 0.09))
    assert f1["reference"] == "B" and f1["reference_value"] == pytest.approx(0.80)
    assert f1["gain_pct"] == pytest.approx(6.25) and f1["significance"] == 1
    assert ranks.loc[("t1", "A"), "significance"] == -1
    assert ranks.loc[("t2", "F"), "significance"] == 0 and ranks.loc[("t2", "F"), "gain_pct"] == pytest.approx(0)
    assert pd.isna(ranks.loc[("t3", "F"), "gain"]) and pd.isna(ranks.loc[("t3", "F"), "significance"])


def test_holm_correction_across_tasks_decides_summary_wins(hand_made):
    metrics, expected = hand_made
    metrics.loc[metrics["metric"].str.startswith(DELTA_PREFIX), "p_value"] = 0.03
    ranks = _ranks(metrics, expected)
    f1 = _row(ranks, "t1", "F")
    assert f1["significance"] == 1 and f1["p_holm"] == pytest.approx(0.06) and f1["significance_holm"] == 0
    summary = tables.summary_table(ranks.reset_index()).set_index("method")
    assert summary.loc["F", "sig_wins"] == 0 and summary.loc["A", "sig_losses"] == 1  # A: one test, p 0.03


def test_gain_sign_follows_metric_direction():
    rows = _rows("s", "A", 0.20, "ibs") + _rows("s", "F", 0.15, "ibs")
    rows.append(_delta("s", "F", -0.05, -0.08, -0.02, "A", metric="ibs"))  # F − A: lower IBS is better
    metrics = metrics_frame(rows)
    expected = metrics.drop_duplicates(["task", "method"])[["task", "kind", "method", "family", "encoder"]]
    ranks = tables.ranks_table(tables.benchmark_table(metrics), metrics, expected, {"s": "ibs"}) \
        .set_index("method")
    assert ranks.loc["F", "is_first"] and ranks.loc["F", "rank"] == 1
    assert (ranks.loc["F", "gain"], ranks.loc["F", "gain_ci_low"], ranks.loc["F", "gain_ci_high"]) == \
        pytest.approx((0.05, 0.02, 0.08))
    assert ranks.loc["F", "significance"] == 1 and ranks.loc["F", "reference_value"] == pytest.approx(0.20)


def test_summary_wins_mean_rank_gain_and_missing(hand_made):
    summary = tables.summary_table(_ranks(*hand_made).reset_index()).set_index("method")
    f = summary.loc["F"]
    assert (f["n_tasks"], f["n_scored"], f["n_missing"], f["wins"], f["wins_of"]) == (3, 2, 1, 2, "2/3")
    assert f["mean_rank"] == pytest.approx(1.5)  # over the 2 tasks F has, next to n_missing = 1
    assert f["mean_gain"] == pytest.approx(0.025) and f["mean_gain_points"] == pytest.approx(2.5)
    assert f["mean_gain_pct"] == pytest.approx(3.125) and f["n_paired"] == 2
    assert (f["sig_wins"], f["sig_losses"]) == (1, 0)  # Holm over F's 2 paired tasks: 0.02 < 0.05
    b, a = summary.loc["B"], summary.loc["A"]
    assert (b["wins"], b["mean_rank"]) == (2, pytest.approx(5 / 3))
    assert (a["wins"], a["mean_rank"], a["sig_losses"]) == (1, pytest.approx(7 / 3), 1)
    o = summary.loc["O"]
    assert o["wins"] == 0 and o["wins_of"] == "" and np.isnan(o["mean_rank"]) and o["n_tasks"] == 1
    assert list(summary.index[:2]) == ["F", "B"]  # most wins first, then mean rank
    missing = tables.missing_cells(_ranks(*hand_made).reset_index())
    assert list(zip(missing["task"], missing["method"], strict=True)) == [("t3", "F")]


def test_task_without_metrics_is_missing_everywhere(hand_made):
    metrics, expected = hand_made
    extra = pd.DataFrame([{"task": "t4", "kind": "mutation", "method": m, "family": FAMILY[m],
                           "encoder": None} for m in "ABF"])
    ranks = tables.ranks_table(tables.benchmark_table(metrics), metrics, pd.concat([expected, extra]),
                               {**PRIMARY, "t4": "auroc"}).set_index(["task", "method"])
    assert ranks.loc["t4"]["status"].eq("missing").all() and ranks.loc["t4"]["value"].isna().all()
    summary = tables.summary_table(ranks.reset_index()).set_index("method")
    assert summary.loc["F", "n_missing"] == 2 and summary.loc["F", "wins_of"] == "2/4"


def test_cost_ratios_use_shared_units():
    rec = pd.DataFrame([
        {"task": "t1", "method": "logitprod", "family": "fuser", "fold": 0, "train_seconds": 2.0, "params": 10,
         "flops": np.nan, "inner_expert_seconds": 10.0,  # half of 20 s of inner experts, shared with stacking
         "required_expert_seconds": 20.0},
        {"task": "t1", "method": "stacking", "family": "baseline", "fold": 0, "train_seconds": 1.0, "params": 10,
         "flops": np.nan, "inner_expert_seconds": 10.0, "required_expert_seconds": 20.0},
        {"task": "t1", "method": "shazam", "family": "fuser", "fold": 0, "train_seconds": 24.0, "params": 1000,
         "flops": np.nan, "inner_expert_seconds": 0.0, "required_expert_seconds": 0.0},
        {"task": "t2", "method": "shazam", "family": "fuser", "fold": 0, "train_seconds": 99.0, "params": 1000,
         "flops": np.nan, "inner_expert_seconds": 0.0,  # logitprod failed on t2: not in the ratio
         "required_expert_seconds": 0.0},
    ])
    expected = pd.DataFrame({"task": ["t1", "t2"] * 3, "method": ["logitprod"] * 2 + ["shazam"] * 2 + ["stacking"] * 2})
    cost = fusion_tables.cost_table(rec, expected, "logitprod").set_index("method")
    assert cost.loc["shazam", "seconds_ratio"] == pytest.approx(12.0)
    assert cost.loc["shazam", "seconds_ratio_incl_experts"] == pytest.approx(2.0)  # 24 / (2 + 10)
    assert cost.loc["logitprod", "total_seconds_incl_experts"] == pytest.approx(12.0)
    assert cost["total_seconds_incl_experts"]["logitprod"] > cost["train_seconds_total"]["logitprod"]
    assert cost.loc["shazam", "total_seconds_incl_experts"] == cost.loc["shazam", "train_seconds_total"]
    shared = cost.loc[["logitprod", "stacking"], "total_seconds_incl_experts"].sum() - \
        cost.loc[["logitprod", "stacking"], "train_seconds_total"].sum()
    assert shared == pytest.approx(20.0)  # the inner experts are charged once in all
    assert cost.loc["logitprod", "total_seconds_standalone"] == pytest.approx(22.0)  # alone, it pays them all
    assert cost.loc["shazam", "total_seconds_standalone"] == cost.loc["shazam", "train_seconds_total"]
    assert cost.loc["shazam", "params_ratio"] == pytest.approx(100.0)
    assert cost.loc["shazam", "train_seconds_total"] == pytest.approx(123.0)
    assert cost.loc["logitprod", "seconds_ratio"] == pytest.approx(1.0)
    assert (cost.loc["logitprod", "n_missing"], cost.loc["shazam", "n_missing"]) == (1, 0)


def test_survival_gate_weights_are_bin_major():
    # 2 samples, T+1 = 2 bins, M = 3 experts: index = bin * M + expert
    gates = np.array([[0.6, 0.3, 0.1, 0.2, 0.2, 0.6],
                      [0.6, 0.3, 0.1, 0.2, 0.2, 0.6]])
    mean, sd = fusion_tables.mean_gate_weights(gates, 3)
    assert mean == pytest.approx([0.4, 0.25, 0.35]) and sd == pytest.approx([0, 0, 0])
    with pytest.raises(ValueError, match="do not split into 4 experts"):
        fusion_tables.mean_gate_weights(gates, 4)

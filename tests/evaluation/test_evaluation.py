"""Stage `evaluate`: real prediction files in the contract shape → the metrics table.

The prediction writers (``make_config``, ``write_task``) are in support/evaluation.py; the report
tests use them too.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from support.evaluation import ENCODERS, make_config, write_task

from pathfuse.config import Config, ConfigError
from pathfuse.evaluation.metrics import score
from pathfuse.evaluation.run import evaluate_task
from pathfuse.evaluation.table import DELTA_PREFIX
from pathfuse.io import SchemaError, read_parquet, write_parquet


@pytest.fixture()
def cfg(tmp_path) -> Config:
    return make_config(tmp_path, ["brca_idc_ilc", "surv_brca"], methods=["logitprod", "mean_logits"])


def test_classification_metrics_per_fold_mean_pooled_and_missing(cfg):
    write_task(cfg, "brca_idc_ilc", {"demo_vit_a": 0.5, "demo_vit_b": 2.0, "demo_vit_c": 1.0,
                                     "logitprod": 2.5}, skip=())
    path = evaluate_task(cfg, "brca_idc_ilc")
    df, meta = read_parquet(path, schema="metrics")
    test = df[(df["split"] == "test") & ~df["metric"].str.startswith(DELTA_PREFIX)]
    # 4 methods present (5 metrics incl. binary_f1; folds 0, 1, mean, pooled) + mean_logits missing (no pooled)
    assert len(test) == 4 * 5 * 4 + 5 * 3
    assert set(test["method"]) == {*ENCODERS, "logitprod", "mean_logits"}
    assert "binary_f1" in set(test["metric"])
    missing = test[test["method"] == "mean_logits"]
    assert (missing["status"] == "missing").all() and missing["value"].isna().all()
    assert "no prediction file" in missing["note"].iloc[0]
    assert missing["family"].isna().all()  # unknown until some task has its file
    ok = test[test["method"] != "mean_logits"]
    assert (ok["status"] == "ok").all() and ok["value"].notna().all()

    # a per-fold value is exactly the shared metrics module on that fold's test rows
    spec = cfg.task("brca_idc_ilc")
    preds, _ = read_parquet(cfg.layout.expert_predictions("brca_idc_ilc", "demo_vit_b"), schema="predictions")
    fold1 = preds[(preds["fold"] == 1) & (preds["split"] == "test")]
    row = test[(test["method"] == "demo_vit_b") & (test["fold"] == 1) & (test["metric"] == "auroc")].iloc[0]
    assert row["value"] == pytest.approx(score(spec, fold1, ["auroc"])["auroc"])
    assert row["n_samples"] == 60 and row["n_patients"] == 60 and row["encoder"] == "demo_vit_b"
    assert meta["n_test_patients"] == {"0": 60, "1": 60}

    auroc = test[(test["metric"] == "auroc") & (test["method"] != "mean_logits")]
    mean = auroc[auroc["statistic"] == "mean"].set_index("method")
    per_fold = auroc[auroc["fold"] >= 0].groupby("method")["value"].mean()
    assert np.allclose(mean["value"], per_fold.reindex(mean.index))
    assert (mean["ci_low"] <= mean["value"]).all() and (mean["value"] <= mean["ci_high"]).all()
    pooled = auroc[auroc["statistic"] == "pooled"]
    assert (pooled["n_samples"] == 120).all() and pooled["note"].str.contains("pooled").all()
    assert mean["value"]["logitprod"] > mean["value"]["demo_vit_a"]


def test_gain_is_the_mean_of_per_fold_differences_against_the_validation_choice(cfg):
    write_task(cfg, "brca_idc_ilc", {"demo_vit_a": 0.2, "demo_vit_b": 3.0, "demo_vit_c": 1.0,
                                     "logitprod": 3.0, "mean_logits": 0.0})
    df, meta = read_parquet(evaluate_task(cfg, "brca_idc_ilc"), schema="metrics")
    val = df[df["split"] == "val"]
    assert set(val["method"]) == set(ENCODERS) and set(val["metric"]) == {"auroc", "nll"}
    assert meta["best_expert"] == {"0": "demo_vit_b", "1": "demo_vit_b"} and meta["reference"] == "demo_vit_b"
    delta = df[(df["metric"] == DELTA_PREFIX + "auroc") & (df["fold"] == -1)].set_index("method")
    assert set(delta.index) == {*ENCODERS, "logitprod", "mean_logits"}
    assert (delta["reference"] == "demo_vit_b").all()
    assert delta.loc["demo_vit_b", "value"] == 0.0 and delta.loc["demo_vit_b", "p_value"] == 1.0
    per_fold = df[(df["metric"] == "auroc") & (df["fold"] >= 0) & (df["split"] == "test")]
    per_fold = per_fold.pivot(index="fold", columns="method", values="value")
    assert delta.loc["mean_logits", "value"] == pytest.approx((per_fold["mean_logits"] - per_fold["demo_vit_b"]).mean())
    assert delta["ci_high"]["mean_logits"] < 0 and delta["p_value"]["mean_logits"] < 0.05
    assert (delta["n_undefined"] == 0).all()


def test_survival_task_scores_cindex_and_ibs_per_fold_never_pooled(cfg):
    write_task(cfg, "surv_brca", {"demo_vit_a": 0.1, "demo_vit_b": 1.5, "demo_vit_c": 0.5, "logitprod": 1.5,
                                  "mean_logits": 1.0})
    df, meta = read_parquet(evaluate_task(cfg, "surv_brca"), schema="metrics")
    assert "pooled" not in set(df["statistic"])
    mean = df[(df["fold"] == -1) & (df["split"] == "test")]
    assert set(mean["metric"]) == {"c_index", "ibs", DELTA_PREFIX + "c_index"}
    cidx = mean[mean["metric"] == "c_index"].set_index("method")
    assert cidx["value"].notna().all() and cidx["value"]["demo_vit_b"] > cidx["value"]["demo_vit_a"] + 0.1
    assert mean[mean["metric"] == "ibs"]["value"].notna().all()  # bin edges reached the IBS
    assert meta["primary_metric"] == "c_index"


def test_missing_fold_makes_mean_cell_missing(cfg):
    write_task(cfg, "brca_idc_ilc", {"demo_vit_a": 1.0, "demo_vit_b": 1.0, "demo_vit_c": 1.0,
                                     "logitprod": 1.0, "mean_logits": 1.0})
    path = cfg.layout.fusion_predictions("brca_idc_ilc", "logitprod")
    preds, meta = read_parquet(path, schema="predictions")
    write_parquet(preds[~((preds["fold"] == 1) & (preds["split"] == "test"))], path, "predictions", meta)
    df, _ = read_parquet(evaluate_task(cfg, "brca_idc_ilc"), schema="metrics")
    lp = df[(df["method"] == "logitprod") & (df["split"] == "test")]
    assert lp[lp["fold"] == 0]["value"].notna().all()
    for fold in (1, -1):
        cells = lp[lp["fold"] == fold]
        assert (cells["status"] == "missing").all() and cells["value"].isna().all(), fold


def test_a_fold_with_one_test_class_is_named_not_averaged(cfg):
    write_task(cfg, "brca_idc_ilc", {"demo_vit_a": 1.0, "demo_vit_b": 2.0, "demo_vit_c": 1.0})
    for enc in ENCODERS:
        path = cfg.layout.expert_predictions("brca_idc_ilc", enc)
        preds, meta = read_parquet(path, schema="predictions")
        one_class = (preds["fold"] == 1) & (preds["split"] == "test")
        preds.loc[one_class, "label"] = 0
        write_parquet(preds, path, "predictions", meta)
    df, _ = read_parquet(evaluate_task(cfg, "brca_idc_ilc"), schema="metrics")
    auroc = df[(df["metric"] == "auroc") & (df["split"] == "test") & (df["method"] == "demo_vit_b")]
    assert auroc.set_index("fold").loc[1, "status"] == "undefined"
    mean = auroc[auroc["statistic"] == "mean"].iloc[0]
    assert mean["value"] == pytest.approx(auroc.set_index("fold").loc[0, "value"])
    assert "fold(s) [1]" in mean["note"] and mean["status"] == "ok"


def test_foreign_file_fails_naming_it(cfg):
    write_task(cfg, "brca_idc_ilc", {"demo_vit_a": 1.0})
    bad = cfg.layout.expert_predictions("brca_idc_ilc", "demo_vit_b")
    write_parquet(pd.DataFrame({"x": [1]}), bad, schema="tiles")
    with pytest.raises(SchemaError, match="demo_vit_b"):
        evaluate_task(cfg, "brca_idc_ilc")
    assert not cfg.layout.metrics("brca_idc_ilc").exists()


def test_primary_metric_override_is_checked(tmp_path):
    cfg = make_config(tmp_path, ["brca_idc_ilc"], primary_metric={"brca_idc_ilc": "c_index"})
    with pytest.raises(ConfigError, match=r"report\.primary_metric\.brca_idc_ilc"):
        evaluate_task(cfg, "brca_idc_ilc")


def test_bootstrap_ci_covers_the_true_auroc(cfg):
    """Known case: scores N(0,1) vs N(d,1) have AUROC Φ(d/√2); the 95% CI should cover it ~95% of the time."""
    from scipy.stats import norm

    from pathfuse.evaluation.metrics import bootstrap_ci

    spec, d, n, draws = cfg.task("brca_idc_ilc"), 1.0, 100, 60
    truth = norm.cdf(d / np.sqrt(2))
    rng = np.random.default_rng(3)
    covered, widths = 0, []
    for i in range(draws):
        y = rng.integers(0, 2, size=n)
        score_pos = rng.normal(size=n) + d * y
        preds = pd.DataFrame({"patient_id": [f"p{j}" for j in range(n)], "label": y,
                              "logits": list(np.stack([np.zeros(n), score_pos], axis=1))})
        low, high = bootstrap_ci(spec, preds, ["auroc"], n_resamples=100, seed=i)["auroc"]
        covered += low <= truth <= high
        widths.append(high - low)
    assert covered / draws >= 0.8, f"coverage {covered}/{draws}"
    assert 0.05 < np.mean(widths) < 0.4  # an informative interval, not [0, 1]

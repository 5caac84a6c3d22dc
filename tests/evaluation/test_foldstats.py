"""Per-fold paired statistics: gains are means of per-fold differences, and the bootstrap is exact."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from support.synthetic import TASK_OF_KIND, SyntheticTask, fast_fusion_settings, write_synthetic_task

from pathfuse.evaluation import foldstats
from pathfuse.evaluation.run import evaluate_task
from pathfuse.evaluation.table import DELTA_PREFIX
from pathfuse.fusion.run import fuse_task
from pathfuse.io import read_parquet, write_parquet


def _synthetic(tmp_path, kind: str, methods: list[str], quality=(1.0, 1.0, 1.0), n_folds: int = 3, n: int = 90):
    task = TASK_OF_KIND[kind]
    fusion = {**fast_fusion_settings(), "methods": methods}
    cfg = write_synthetic_task(tmp_path, SyntheticTask(task=task, n_samples=n, n_folds=n_folds, quality=quality),
                               fusion, with_features=False)
    return cfg, task


def _delta(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    return df[df["metric"] == DELTA_PREFIX + metric]


def test_identical_per_fold_metrics_with_shifted_scores_give_zero_gain(tmp_path):
    """A reference that differs only by per-fold score shifts gains nothing, though pooled AUROCs differ.

    Expert 1 = expert 0 with its positive-class logit shifted in folds 1 and 2 (same per-fold AUROC);
    the reference switches to expert 1 in fold 1. The pooled AUROCs differ, the per-fold gain is 0.
    """
    cfg, task = _synthetic(tmp_path, "mutation", [], quality=(0.3, 0.0, 0.2))
    first, _ = read_parquet(cfg.layout.expert_predictions(task, "teacher0"), schema="predictions")
    path = cfg.layout.expert_predictions(task, "teacher1")
    _, meta = read_parquet(path, schema="predictions")
    clone = first.copy()
    shift = (clone["split"] == "test") & clone["fold"].isin([1, 2])
    shifted = [v + np.array([0.0, 2.5], dtype=np.float32) for v in clone.loc[shift, "logits"]]
    clone.loc[shift, "logits"] = pd.Series(shifted, index=clone.index[shift])
    val1 = (clone["split"] == "val") & (clone["fold"] == 1)  # expert 1 wins fold 1 on validation
    positive, negative = np.array([-3.0, 3.0], dtype=np.float32), np.array([3.0, -3.0], dtype=np.float32)
    clone.loc[val1, "logits"] = pd.Series([positive if y else negative
                                           for y in clone.loc[val1, "label"]], index=clone.index[val1])
    write_parquet(clone, path, schema="predictions", meta=meta)

    df, meta = read_parquet(evaluate_task(cfg, task), schema="metrics")
    assert meta["best_expert"] == {"0": "teacher0", "1": "teacher1", "2": "teacher0"}
    auroc = df[(df["metric"] == "auroc") & (df["split"] == "test")]
    per_fold = auroc[auroc["fold"] >= 0].pivot(index="fold", columns="method", values="value")
    np.testing.assert_array_equal(per_fold["teacher0"], per_fold["teacher1"])
    pooled = auroc[auroc["statistic"] == "pooled"].set_index("method")["value"]
    assert abs(pooled["teacher0"] - pooled["teacher1"]) > 0.01  # what a pooled comparison would see
    gains = _delta(df, "auroc").query("fold == -1").set_index("method")
    for expert in ("teacher0", "teacher1"):
        assert gains["value"][expert] == 0.0
        assert gains["p_value"][expert] >= 0.5
        assert gains["ci_low"][expert] == 0.0 == gains["ci_high"][expert]


def _tiny_case() -> tuple[dict[int, pd.DataFrame], dict[int, pd.DataFrame]]:
    """Two folds × (2 positive + 2 negative patients); two methods' binary logits."""
    rng = np.random.default_rng(5)
    a: dict[int, pd.DataFrame] = {}
    b: dict[int, pd.DataFrame] = {}
    for fold in (0, 1):
        pid = [f"f{fold}p{i}" for i in range(4)]
        label = np.array([0, 1, 0, 1])
        for out in (a, b):
            out[fold] = pd.DataFrame({"fold": fold, "patient_id": pid, "sample_id": pid, "label": label,
                                      "logits": list(np.stack([np.zeros(4), rng.normal(size=4)], axis=1))})
    return a, b


def _sk_auroc(df: pd.DataFrame, picks: list[str]) -> float:
    rows = df.set_index("patient_id").loc[picks]
    return roc_auc_score(rows["label"], [v[1] for v in rows["logits"]])


def test_paired_bootstrap_matches_a_brute_force_enumeration():
    from pathfuse.config import TaskSpec

    task = TaskSpec(id="tiny", kind="mutation", description="", classes=(0, 1), metrics=("auroc",),
                    primary_metric="auroc", cohort="c")
    a, b = _tiny_case()
    n_draws = 20_000
    samples = {f: foldstats.fold_sample(task, f, {"a": a[f], "b": b[f]}, {}, need_curves=False) for f in (0, 1)}
    draws = {f: foldstats.draw_patients(samples[f].strata, n_draws, np.random.default_rng(f)) for f in (0, 1)}
    scores = {f: {m: foldstats.score_fold(task, samples[f], m, ["auroc"], draws[f])["auroc"] for m in "ab"}
              for f in (0, 1)}
    observed = {f: scores[f]["a"][0] - scores[f]["b"][0] for f in (0, 1)}
    stat = foldstats.mean_over_folds(observed, {f: scores[f]["a"][1] - scores[f]["b"][1] for f in (0, 1)},
                                     0.95, "auroc", with_p=True)

    # each resample equals scikit-learn on the explicitly drawn patients
    for i in range(30):
        per_fold = []
        for f in (0, 1):
            picks = [samples[f].patients[c] for c in draws[f][i]]
            per_fold.append(_sk_auroc(a[f], picks) - _sk_auroc(b[f], picks))
        assert stat.draws[i] == pytest.approx(np.mean(per_fold), abs=1e-12)

    # the exact bootstrap distribution: every within-stratum draw of both folds, equally likely
    def fold_outcomes(f: int) -> list[float]:
        neg, pos = ([p for p, y in zip(a[f]["patient_id"], a[f]["label"], strict=True) if y == c] for c in (0, 1))
        out = []
        for n_pick in itertools.product(neg, repeat=2):
            for p_pick in itertools.product(pos, repeat=2):
                picks = [*n_pick, *p_pick]
                out.append(_sk_auroc(a[f], picks) - _sk_auroc(b[f], picks))
        return out

    exact = np.array([(x + y) / 2 for x, y in itertools.product(fold_outcomes(0), fold_outcomes(1))])
    assert stat.value == pytest.approx(np.mean(list(observed.values())))
    assert stat.n_undefined == 0
    assert stat.draws.mean() == pytest.approx(exact.mean(), abs=0.01)
    for t in np.unique(exact):  # the bootstrap CDF follows the exact one (DKW: 2e-4 chance of > 0.02)
        assert (stat.draws <= t + 1e-12).mean() == pytest.approx((exact <= t + 1e-12).mean(), abs=0.02)
    exact_p = min(1.0, 2 * min((exact <= 0).mean(), (exact >= 0).mean()))
    assert stat.p_value == pytest.approx(exact_p, abs=0.03)
    low, high = np.percentile(exact, [2.5, 97.5])
    assert stat.ci_low == pytest.approx(low, abs=0.13) and stat.ci_high == pytest.approx(high, abs=0.13)


@pytest.mark.parametrize("kind", ["mutation", "survival"])
def test_best_val_expert_gain_is_zero_by_construction(tmp_path, kind):
    """Same rule in the baseline and in the reference, also with an undefined validation metric."""
    cfg, task = _synthetic(tmp_path, kind, ["best_val_expert"], quality=(1.0, 0.9, 1.1), n=60)
    if kind == "mutation":  # fold 0: one class in validation → AUROC undefined for all → NLL decides
        for enc in cfg.task(task).encoders:
            path = cfg.layout.expert_predictions(task, enc)
            df, meta = read_parquet(path, schema="predictions")
            df = df[~((df["fold"] == 0) & (df["split"] == "val") & (df["label"] == 1))]
            write_parquet(df, path, schema="predictions", meta=meta)
    fuse_task(cfg, task)
    _, fused_meta = read_parquet(cfg.layout.fusion_predictions(task, "best_val_expert"), schema="predictions")
    df, meta = read_parquet(evaluate_task(cfg, task), schema="metrics")
    assert meta["best_expert"] == {f: info["chosen_expert"] for f, info in fused_meta["folds"].items()}
    gains = _delta(df, cfg.task(task).primary_metric)
    gains = gains[gains["method"] == "best_val_expert"]
    assert len(gains) == 4 and (gains["value"] == 0.0).all() and (gains["status"] == "ok").all()


def test_holm_adjusts_step_down_and_keeps_nan():
    adjusted = foldstats.holm([0.01, 0.04, np.nan, 0.03, 0.5])
    np.testing.assert_allclose(adjusted[[0, 1, 3, 4]], [0.04, 0.09, 0.09, 0.5])
    assert np.isnan(adjusted[2])

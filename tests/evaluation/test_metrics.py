"""Metrics equal scikit-learn / lifelines, aggregate per patient, and bootstrap patients."""

from __future__ import annotations

import functools
import logging

import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter
from lifelines.utils import concordance_index
from scipy.special import softmax
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

from pathfuse.config import TaskSpec
from pathfuse.evaluation import foldstats
from pathfuse.evaluation.metrics import HIGHER_IS_BETTER, bootstrap_ci, score

BINARY = TaskSpec(
    id="bin",
    kind="wsi_classification",
    description="",
    classes=("a", "b"),
    metrics=("auroc", "balanced_accuracy", "accuracy", "macro_f1", "weighted_f1"),
)
MULTI = TaskSpec(
    id="multi",
    kind="wsi_classification",
    description="",
    classes=("a", "b", "c", "d"),
    metrics=BINARY.metrics,
)
SURV = TaskSpec(id="surv", kind="survival", description="", n_bins=4, metrics=("c_index", "ibs"))
TILES = TaskSpec(
    id="tiles", kind="tile_classification", description="", classes=("a", "b"), metrics=("accuracy",)
)


def classification_rows(n: int, n_classes: int, seed: int = 0, rows_per_patient: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    logits = rng.normal(size=(n, n_classes)) + 1.5 * np.eye(n_classes)[y]
    df = pd.DataFrame(
        {
            "patient_id": [f"p{i}" for i in range(n)],
            "sample_id": [f"s{i}" for i in range(n)],
            "label": y,
            "fold": 0,
            "logits": list(logits.astype(np.float32)),
        }
    )
    return pd.concat([df] * rows_per_patient, ignore_index=True)


def survival_rows(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, 4))
    time = rng.exponential(10, n).round(1) + 0.1
    return pd.DataFrame(
        {
            "patient_id": [f"p{i}" for i in range(n)],
            "label": -1,
            "time": time,
            "event": (rng.uniform(size=n) < 0.7).astype(np.int8),
            "fold": 0,
            "logits": list(logits.astype(np.float32)),
        }
    )


def probs_of(df: pd.DataFrame) -> np.ndarray:
    return softmax(np.stack(list(df["logits"])).astype(np.float64), axis=1)


@pytest.mark.parametrize("task", [BINARY, MULTI])
def test_classification_metrics_equal_sklearn(task):
    df = classification_rows(80, len(task.classes))
    y, p = df["label"].to_numpy(), probs_of(df)
    pred = p.argmax(1)
    auroc = roc_auc_score(y, p[:, 1]) if len(task.classes) == 2 else roc_auc_score(y, p, multi_class="ovr")
    expected = {
        "auroc": auroc,
        "balanced_accuracy": balanced_accuracy_score(y, pred),
        "accuracy": accuracy_score(y, pred),
        "macro_f1": f1_score(y, pred, average="macro"),
        "weighted_f1": f1_score(y, pred, average="weighted"),
    }
    assert score(task, df) == pytest.approx(expected, rel=1e-9)


def test_ties_and_missing_predicted_classes_still_equal_sklearn_and_lifelines():
    df = classification_rows(90, 3, seed=3)
    df["logits"] = [np.round(v) for v in df["logits"]]  # many tied scores
    df.loc[:9, "label"] = 2
    y, p = df["label"].to_numpy(), probs_of(df)
    pred = p.argmax(1)
    out = score(MULTI.__class__(**{**MULTI.__dict__, "classes": ("a", "b", "c")}), df)
    assert out["auroc"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr"))
    assert out["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert out["weighted_f1"] == pytest.approx(f1_score(y, pred, average="weighted"))
    assert out["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    surv = survival_rows(80, seed=4)
    surv["time"] = surv["time"].round(-1) + 1  # tied times, some shared by events and censorings
    surv["logits"] = [np.round(v) for v in surv["logits"]]
    hazards = 1 / (1 + np.exp(-np.stack(list(surv["logits"])).astype(np.float64)))
    risk = -np.cumprod(1 - hazards, axis=1).sum(1)
    expected = concordance_index(surv["time"], -risk, surv["event"])
    assert score(SURV, surv, ["c_index"])["c_index"] == pytest.approx(expected)


def test_rows_are_averaged_per_patient():
    df = classification_rows(40, 2)
    twin = df.assign(logits=[v[::-1].copy() for v in df["logits"]])  # a second slide per patient
    both = pd.concat([df, twin], ignore_index=True)
    mean_p = (probs_of(df) + probs_of(twin)) / 2
    assert score(BINARY, both)["auroc"] == pytest.approx(roc_auc_score(df["label"], mean_p[:, 1]))
    assert score(BINARY, pd.concat([df, df]))["auroc"] == pytest.approx(score(BINARY, df)["auroc"])


def test_tile_tasks_are_scored_per_tile():
    df = classification_rows(30, 2).assign(patient_id="one_group")
    y, p = df["label"], probs_of(df)
    assert score(TILES, df)["accuracy"] == pytest.approx(accuracy_score(y, p.argmax(1)))


def test_c_index_equals_lifelines_with_minus_summed_survival_as_risk():
    df = survival_rows(60)
    hazards = 1 / (1 + np.exp(-np.stack(list(df["logits"])).astype(np.float64)))
    risk = -np.cumprod(1 - hazards, axis=1).sum(1)
    expected = concordance_index(df["time"], -risk, df["event"])
    assert score(SURV, df, ["c_index"])["c_index"] == pytest.approx(expected)


def brute_force_ibs(df: pd.DataFrame, edges: np.ndarray) -> float:
    """Graf's IPCW Brier score integrated over the event times, with lifelines' KM for censoring."""
    time, event = df["time"].to_numpy(), df["event"].to_numpy()
    hazards = 1 / (1 + np.exp(-np.stack(list(df["logits"])).astype(np.float64)))
    surv_at_edges = np.concatenate([np.ones((len(df), 1)), np.cumprod(1 - hazards, axis=1)], axis=1)
    grid = np.unique(time[(event == 1) & (time < time.max())])
    km = KaplanMeierFitter().fit(time, 1 - event)
    g = functools.cache(lambda t: float(km.survival_function_at_times(t).iloc[0]))
    scores = []
    for t in grid:
        total = 0.0
        for i in range(len(df)):
            s = np.interp(t, edges, surv_at_edges[i])
            if time[i] <= t and event[i] == 1:
                total += s**2 / g(time[i] - 1e-9)
            elif time[i] > t:
                total += (1 - s) ** 2 / g(t)
        scores.append(total / len(df))
    return float(np.trapezoid(scores, grid) / (grid[-1] - grid[0]))


def test_integrated_brier_score_matches_a_brute_force_ipcw_computation():
    df = survival_rows(25, seed=3)
    edges = np.array([0.0, 3.0, 7.0, 14.0, 40.0])
    assert score(SURV, df, ["ibs"], bin_edges=edges)["ibs"] == pytest.approx(
        brute_force_ibs(df, edges), rel=1e-9
    )
    by_fold = score(SURV, df, ["ibs"], bin_edges={"0": list(edges)})["ibs"]
    assert by_fold == pytest.approx(brute_force_ibs(df, edges))
    assert not HIGHER_IS_BETTER["ibs"]


def test_undefined_metrics_are_nan_with_a_warning(caplog):
    df = classification_rows(20, 2).assign(label=0)
    with caplog.at_level(logging.WARNING, logger="pathfuse.evaluation"):
        out = score(BINARY, df)
    assert np.isnan(out["auroc"]) and out["accuracy"] >= 0
    assert "auroc is undefined" in caplog.text
    no_events = survival_rows(10).assign(event=0)
    assert np.isnan(score(SURV, no_events, ["c_index"])["c_index"])
    assert np.isnan(score(SURV, survival_rows(10), ["ibs"])["ibs"])  # no bin edges given
    with pytest.raises(ValueError, match="unknown metric"):
        score(SURV, no_events, ["auroc"])


def test_bootstrap_resamples_patients_not_rows():
    df = classification_rows(60, 2, seed=1)
    one = bootstrap_ci(BINARY, df, ["auroc", "accuracy"], n_resamples=200, seed=5)
    five_rows_each = bootstrap_ci(BINARY, pd.concat([df] * 5), ["auroc", "accuracy"], n_resamples=200, seed=5)

    def flat(ci: dict[str, tuple[float, float]]) -> list[float]:
        return [v for m in sorted(ci) for v in ci[m]]

    assert flat(five_rows_each) == pytest.approx(flat(one))  # row-level resampling would shrink the interval
    point = score(BINARY, df)["auroc"]
    low, high = one["auroc"]
    assert low < point < high and high - low > 0.05
    assert bootstrap_ci(BINARY, df, ["auroc"], n_resamples=200, seed=5) == bootstrap_ci(
        BINARY, df, ["auroc"], n_resamples=200, seed=5
    )


def test_bootstrap_keeps_a_patients_rows_together():
    """Patients with rows of different labels: all their units move together in a resample."""
    df = classification_rows(30, 2, seed=2)
    other = df.assign(label=1 - df["label"], sample_id=df["sample_id"] + "b")
    ci = bootstrap_ci(BINARY, pd.concat([df, other]), ["accuracy"], n_resamples=100, seed=0)
    assert ci["accuracy"][0] == pytest.approx(0.5) and ci["accuracy"][1] == pytest.approx(0.5)


def _paired(task, a, b, metric, n_resamples, seed, edges=None):
    sample = foldstats.fold_sample(task, 0, {"a": a, "b": b}, {"a": edges, "b": edges}, need_curves=metric == "ibs")
    draws = foldstats.draw_patients(sample.strata, n_resamples, np.random.default_rng(seed))
    sa, sb = (foldstats.score_fold(task, sample, m, [metric], draws)[metric] for m in "ab")
    return sample, draws, foldstats.mean_over_folds({0: sa[0] - sb[0]}, {0: sa[1] - sb[1]}, 0.95, metric, True)


def test_survival_bootstrap_and_paired_bootstrap():
    df = survival_rows(50)
    ci = bootstrap_ci(SURV, df, ["c_index", "ibs"], n_resamples=100, seed=0, bin_edges=[0, 3, 7, 14, 40])
    assert all(lo < hi for lo, hi in ci.values())
    sample, draws, same = _paired(SURV, df, df, "c_index", 100, 0)
    assert same.value == 0 and same.ci_low == same.ci_high == 0 and same.p_value == 1.0
    events = sample.strata[draws]  # stratified by event status: each resample keeps the event count
    assert (events.sum(axis=1) == sample.strata.sum()).all()


def test_paired_bootstrap_detects_a_better_method_and_keeps_class_counts():
    good = classification_rows(80, 2, seed=4)
    rng = np.random.default_rng(9)
    noise = good.assign(logits=list(rng.normal(size=(80, 2)).astype(np.float32)))
    sample, draws, out = _paired(BINARY, good, noise, "auroc", 300, 1)
    assert out.value > 0.2 and out.ci_low > 0 and out.p_value < 0.01 and out.n_undefined == 0
    assert (sample.strata[draws].sum(axis=1) == good["label"].sum()).all()
    with pytest.raises(ValueError, match="share no test patient"):
        foldstats.fold_sample(BINARY, 0, {"a": good, "b": noise.assign(patient_id="x")}, {}, False)


def test_binary_f1_is_the_positive_class_f1_of_sklearn():
    df = classification_rows(60, 2, seed=8)
    pred = probs_of(df).argmax(1)
    assert score(BINARY, df, ["binary_f1"])["binary_f1"] == pytest.approx(f1_score(df["label"], pred))
    assert np.isnan(score(MULTI, classification_rows(40, 4), ["binary_f1"])["binary_f1"])


def test_sample_level_helpers_for_checkpoint_choice():
    from pathfuse.evaluation.metrics import auroc, concordance

    df = survival_rows(50, seed=6)
    risk = np.random.default_rng(0).normal(size=50)
    time, event = df["time"].to_numpy(), df["event"].to_numpy()
    assert concordance(time, risk, event) == pytest.approx(
        concordance_index(df["time"], -risk, df["event"])
    )
    assert np.isnan(concordance(time, risk, np.zeros(50)))
    cls = classification_rows(40, 3)
    p = probs_of(cls)
    assert auroc(cls["label"].to_numpy(), p) == pytest.approx(roc_auc_score(cls["label"], p, multi_class="ovr"))
    assert np.isnan(auroc(np.zeros(40), p[:, :2]))

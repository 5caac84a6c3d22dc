"""The fusion methods' own tables: training cost against a reference method, and gate weights.

Pure DataFrame and array code, tested on hand-made tables like :mod:`pathfuse.report.tables`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

#: Mean KL(gate weights ‖ uniform) below this (nats) flags a gate that never moved: LogitProd is then
#: the uniform product of experts (the mean-logits baseline for classification), whatever its name.
NEAR_UNIFORM_KL = 0.01


# ----------------------------------------------------------------------------- cost
def cost_table(records: pd.DataFrame, expected: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Per fusion method: training seconds, parameters, and their ratios to ``reference``.

    Seconds come twice: the method's own, and including its share of the inner-fold experts.

    Args:
        records: one row per (task, method, family, fold) with ``train_seconds``, ``params``,
            ``flops``, ``inner_expert_seconds`` (the method's share of the fold's inner-fold
            expert trainings, 0 for methods that did not read out-of-fold logits) and
            ``required_expert_seconds`` (all of them, for a method that read them).
        expected: (task, method) pairs the run should have, for the ``n_missing`` count.
        reference: the method the ratios divide by (LogitProd). Ratios use only the
            (task, fold) units both methods have, so a missing task does not skew them.

    ``train_seconds_total`` is the method's own training; ``total_seconds_incl_experts`` adds the
    inner-fold experts only logit-level methods needing out-of-fold logits require (LogitProd,
    stacking with ``train_on: oof``), shared equally between those of the run.
    ``total_seconds_standalone`` charges a method all the inner-fold experts it read (what adding
    it alone to a run with the outer experts costs; the report's cost-gain figure plots it).
    ``seconds_ratio`` / ``seconds_ratio_incl_experts``: the two bases of the comparison with ``reference``.
    """
    cols = ["method", "family", "n_tasks", "n_missing", "n_folds", "train_seconds_total",
            "total_seconds_incl_experts", "total_seconds_standalone", "train_seconds_per_fold", "params_mean",
            "params_max", "flops_mean",
            "reference", "seconds_ratio", "seconds_ratio_incl_experts", "params_ratio"]
    if records.empty and expected.empty:
        return pd.DataFrame(columns=cols)
    records = records.assign(total=records["train_seconds"] + records["inner_expert_seconds"].fillna(0.0),
                             standalone=records["train_seconds"] + records["required_expert_seconds"].fillna(0.0))
    g = records.groupby("method", sort=False)
    out = pd.DataFrame({
        "family": g["family"].first(),
        "n_tasks": g["task"].nunique(),
        "n_folds": g.size(),
        "train_seconds_total": g["train_seconds"].sum(min_count=1),
        "total_seconds_incl_experts": g["total"].sum(min_count=1),
        "total_seconds_standalone": g["standalone"].sum(min_count=1),
        "train_seconds_per_fold": g["train_seconds"].mean(),
        "params_mean": g["params"].mean(),
        "params_max": g["params"].max(),
        "flops_mean": g["flops"].mean(),
    })
    out = out.reindex(pd.Index(expected["method"].unique(), name="method").union(out.index, sort=False))
    out["family"] = out["family"].fillna("unknown")
    out["n_tasks"] = out["n_tasks"].fillna(0).astype("int64")
    out["n_folds"] = out["n_folds"].fillna(0).astype("int64")
    absent = set(zip(expected["task"], expected["method"], strict=True)) - set(
        zip(records["task"], records["method"], strict=True))
    out["n_missing"] = [sum(m == method for _, m in absent) for method in out.index]
    out["reference"] = reference
    ref = records[records["method"] == reference].set_index(["task", "fold"])
    ratios = {}
    for method, rec in records.groupby("method", sort=False):
        both = rec.set_index(["task", "fold"]).join(ref[["train_seconds", "total", "params"]], rsuffix="_ref",
                                                    how="inner")
        ratios[method] = (
            both["train_seconds"].sum() / both["train_seconds_ref"].sum() if len(both) else np.nan,
            both["total"].sum() / both["total_ref"].sum() if len(both) else np.nan,
            both["params"].mean() / both["params_ref"].mean() if len(both) else np.nan,
        )
    for i, col in enumerate(("seconds_ratio", "seconds_ratio_incl_experts", "params_ratio")):
        out[col] = [ratios.get(m, (np.nan,) * 3)[i] for m in out.index]
    return out.reset_index()[cols]


# ----------------------------------------------------------------------------- gate weights
def mean_gate_weights(gates: np.ndarray, n_experts: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sd over samples of each expert's gate weight.

    ``gates`` is [n_samples, K] with K = M (classification) or (T+1)·M bin-major (survival:
    index ``bin * M + expert``); survival weights are first averaged over the T+1 bins, so each
    sample contributes one weight per expert and the means over experts still sum to 1.
    """
    gates = np.asarray(gates, dtype=np.float64)
    if gates.ndim != 2 or gates.shape[1] % n_experts:
        raise ValueError(f"gate weights of shape {gates.shape} do not split into {n_experts} experts")
    per_sample = gates.reshape(len(gates), gates.shape[1] // n_experts, n_experts).mean(axis=1)
    return per_sample.mean(axis=0), per_sample.std(axis=0, ddof=1) if len(gates) > 1 else np.zeros(n_experts)


# ----------------------------------------------------------------------------- cost against gain
def cost_gain_points(cost: pd.DataFrame, ranks: pd.DataFrame, ci_level: float = 0.95) -> pd.DataFrame:
    """Per fusion method: its cost on its own, its mean gain over the best expert with a CI across tasks, Pareto flag.

    ``seconds`` is ``total_seconds_standalone`` of :func:`cost_table` (its own training plus every
    inner-fold expert it read; the outer experts every method reads are left out). The gain is the
    mean over tasks of the paired gain over the validation-selected expert (primary metric × 100),
    with a Student-t interval across tasks (tasks are the units a lab generalises over). A method is
    on the Pareto front when no other costs at most as much and gains at least as much, one of them
    strictly; oracles (test-selected) are drawn but never on the front.
    """
    cols = ["method", "family", "seconds", "gain_points", "ci_low", "ci_high", "n_tasks", "pareto"]
    gains = ranks[ranks["family"] != "expert"].groupby("method", sort=False)["gain"]
    data = cost[["method", "family", "total_seconds_standalone"]] \
        .rename(columns={"total_seconds_standalone": "seconds"})
    data = data.assign(gain_points=data["method"].map(100 * gains.mean()), n_tasks=data["method"].map(gains.count()),
                       sd=data["method"].map(100 * gains.std(ddof=1)))
    data = data[np.isfinite(data["seconds"].astype(float)) & np.isfinite(data["gain_points"].astype(float))]
    n = data["n_tasks"].astype(float)
    half = stats.t.ppf(0.5 + ci_level / 2, np.maximum(n - 1, 1)) * data["sd"] / np.sqrt(n)
    data = data.assign(ci_low=data["gain_points"] - half.where(n > 1), ci_high=data["gain_points"] + half.where(n > 1))
    competing = data[data["family"] != "oracle"]
    data["pareto"] = [
        family != "oracle" and not ((competing["seconds"] <= s) & (competing["gain_points"] >= g)
                                    & ((competing["seconds"] < s) | (competing["gain_points"] > g))).any()
        for family, s, g in zip(data["family"], data["seconds"], data["gain_points"], strict=True)]
    return data.reset_index(drop=True)[cols]

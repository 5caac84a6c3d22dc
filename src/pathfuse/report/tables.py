"""The benchmark, ranks and summary tables, computed from the metrics tables of all tasks.

Pure DataFrame code; the fusion methods' cost and gate-weight tables are in
:mod:`pathfuse.report.fusion_tables`.

Nothing here reads files, so every rule of the tables — which value is ranked, how ties and
missing cells count, what a significant win is — is tested on hand-made tables.

Missing cells are never averaged away: a method without a value on a task has ``value`` NaN
and no rank there, counts in ``n_missing`` of the summary, and its means are over the tasks
it has (``n_scored`` of ``n_tasks``, shown next to every mean).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from pathfuse.evaluation.foldstats import holm
from pathfuse.evaluation.metrics import HIGHER_IS_BETTER
from pathfuse.evaluation.table import DELTA_PREFIX

#: Display and sort order of method families.
FAMILY_ORDER = ("expert", "baseline", "fuser", "oracle", "unknown")
_KEYS = ["task", "method", "metric"]
#: Values closer than this are a tie (bootstrap-free metrics of identical predictions).
TIE_DECIMALS = 10


def fill_family(df: pd.DataFrame) -> pd.DataFrame:
    """Give rows of a method with no known family (its file was missing) the family it has elsewhere."""
    known = df.dropna(subset=["family"]).groupby("method")["family"].agg(lambda s: s.mode().iloc[0])
    out = df.copy()
    out["family"] = out["family"].fillna(out["method"].map(known)).fillna("unknown")
    return out


def order_rows(df: pd.DataFrame, task_order: Sequence[str], method_order: Sequence[str],
               extra: Sequence[str] = ()) -> pd.DataFrame:
    """Sort by task (run order), family, method (config order), then ``extra`` columns."""
    task_rank = {t: i for i, t in enumerate(task_order)}
    method_rank = {m: i for i, m in enumerate(method_order)}
    fam_rank = {f: i for i, f in enumerate(FAMILY_ORDER)}
    keys = pd.DataFrame({
        "_t": df["task"].map(task_rank).fillna(len(task_rank)) if "task" in df else 0,
        "_f": df["family"].map(fam_rank).fillna(len(fam_rank)),
        "_m": df["method"].map(method_rank).fillna(len(method_rank)),
    }, index=df.index)
    merged = pd.concat([df, keys], axis=1)
    return merged.sort_values(["_t", "_f", "_m", "method", *extra]).drop(columns=["_t", "_f", "_m"]) \
        .reset_index(drop=True)


# ----------------------------------------------------------------------------- benchmark
def _statistic(metrics: pd.DataFrame) -> pd.Series:
    """Each row's statistic: ``fold`` for fold ≥ 0, else its ``statistic`` (``mean`` where unset)."""
    return metrics["statistic"].fillna("mean").where(metrics["fold"] < 0, "fold")


def benchmark_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Task × method × metric: mean over folds with its CI, sd over folds, and (labelled) pooled value.

    ``mean`` is the mean over the folds with a defined value, ``ci_low``/``ci_high`` its
    stratified per-fold bootstrap CI (:mod:`pathfuse.evaluation.foldstats`); it is NaN unless every fold is
    present (``n_folds`` of ``n_folds_expected``; a fold where the metric is undefined is present
    and named in ``undefined_folds``). ``pooled``/``pooled_ci_*``: the metric of all folds' test
    predictions pooled (classification with several folds only). ``n_test_patients`` lists each
    fold's test patients. ``status``: ok, incomplete (some cells missing) or missing.
    """
    metrics = metrics.assign(statistic=_statistic(metrics))
    test = metrics[(metrics["split"] == "test") & ~metrics["metric"].str.startswith(DELTA_PREFIX)]
    ident = test.groupby(_KEYS, sort=False)[["kind", "family", "encoder"]].first()
    fold_rows = test[test["statistic"] == "fold"]
    present = fold_rows[fold_rows["status"] != "missing"].groupby(_KEYS, sort=False)
    folds = fold_rows.groupby(_KEYS, sort=False)
    per_fold = pd.DataFrame({
        "sd": folds["value"].std(ddof=1), "n_folds": present.size(), "n_folds_expected": folds.size(),
        "undefined_folds": fold_rows.assign(_u=fold_rows["fold"].where(fold_rows["status"] == "undefined"))
        .groupby(_KEYS, sort=False)["_u"].agg(lambda s: ",".join(str(int(f)) for f in s.dropna())),
        "n_test_patients": folds["n_patients"].agg(lambda s: ",".join(str(int(n)) for n in s)),
    })
    mean = test[test["statistic"] == "mean"].set_index(_KEYS)[["value", "ci_low", "ci_high", "n_samples"]] \
        .rename(columns={"value": "mean"})
    pooled = test[test["statistic"] == "pooled"].set_index(_KEYS)[["value", "ci_low", "ci_high"]] \
        .rename(columns={"value": "pooled", "ci_low": "pooled_ci_low", "ci_high": "pooled_ci_high"})
    counts = test.assign(_miss=test["status"] == "missing").groupby(_KEYS, sort=False)["_miss"].agg(["sum", "size"])
    notes = test[test["note"].fillna("") != ""].groupby(_KEYS, sort=False)["note"].first()
    out = ident.join(per_fold, how="left").join(mean, how="left").join(pooled, how="left").join(notes, how="left")
    incomplete = out["n_folds"].fillna(0) < out["n_folds_expected"].fillna(0)
    out.loc[incomplete, ["mean", "sd", "ci_low", "ci_high"]] = np.nan
    out["status"] = np.select([counts["sum"] == counts["size"], counts["sum"] > 0], ["missing", "incomplete"], "ok")
    out["note"] = out["note"].fillna("")
    out = out.reset_index()
    out[["n_folds", "n_folds_expected"]] = out[["n_folds", "n_folds_expected"]].fillna(0).astype("int64")
    out["n_samples"] = out["n_samples"].fillna(0).astype("int64")
    out[["undefined_folds", "n_test_patients"]] = out[["undefined_folds", "n_test_patients"]].fillna("")
    return out[["task", "kind", "method", "family", "encoder", "metric", "mean", "ci_low", "ci_high", "sd",
                "pooled", "pooled_ci_low", "pooled_ci_high", "n_samples", "n_test_patients", "n_folds",
                "n_folds_expected", "undefined_folds", "status", "note"]]


# ----------------------------------------------------------------------------- ranks
def _direction(metric: str) -> float:
    return 1.0 if HIGHER_IS_BETTER[metric] else -1.0


def ranks_table(benchmark: pd.DataFrame, metrics: pd.DataFrame, expected: pd.DataFrame,
                primary: Mapping[str, str], statistic: str = "mean",
                rank_families: Sequence[str] = ("expert", "fuser", "baseline"), level: float = 0.95) -> pd.DataFrame:
    """Per task × method on the task's primary metric: value, rank, first place, gain vs best expert.

    Args:
        benchmark: :func:`benchmark_table` output.
        metrics: the metrics rows (for the paired ``delta_<primary>`` rows).
        expected: one row per (task, kind, method, family, encoder) the run should have; cells
            absent from ``benchmark`` (a task never evaluated) become missing rows.
        primary: task → primary metric.
        statistic: "mean" (over folds, default) or "pooled" (labelled option: the metric of the
            pooled test predictions): the value that is ranked. Gains always use the per-fold mean.
        rank_families: families that compete; others are listed without a rank.
        level: CI level; ``significance_holm`` uses 1 − level as the family-wise error rate.

    ``value`` is the ranked statistic; ``mean`` with ``ci_low``/``ci_high`` the mean over folds and
    its bootstrap CI. Ranks are average ranks (ties share the mean of their places); every method
    tied for the best value is first. ``gain`` = mean over folds of (method − the fold's
    validation-selected expert), signed so that positive is better; ``significance`` (+1/−1)
    where its paired CI excludes 0 (uncorrected, per task); ``p_holm`` the p-value Holm-corrected
    across the tasks of the method, ``significance_holm`` its verdict at 1 − level. With
    ``experts.n_seeds`` > 1 (metrics rows ``statistic == "seed"``): ``gain_seeds_mean``,
    ``gain_seeds_sd`` (SD across seeds, seed 0 included) and ``n_seeds``; absent otherwise.
    """
    prim = pd.Series(primary, name="metric").rename_axis("task").reset_index()
    rows = benchmark.merge(prim, on=["task", "metric"])
    cells = expected.merge(prim, on="task").merge(
        rows.drop(columns=["kind", "family", "encoder"]), on=["task", "method", "metric"], how="outer")
    cells["kind"] = cells["kind"].fillna(cells["task"].map(rows.groupby("task")["kind"].first()))
    cells["family"] = cells["family"].fillna(cells["method"].map(rows.groupby("method")["family"].first()))
    cells["status"] = cells["status"].fillna("missing")
    cells["note"] = cells["note"].fillna("no metrics for this task")
    cells["value"] = cells["mean" if statistic == "mean" else "pooled"]
    sign = cells["metric"].map(_direction)
    ranked = cells["family"].isin(rank_families) & cells["value"].notna()
    key = (sign * cells["value"]).round(TIE_DECIMALS).where(ranked)
    cells["rank"] = key.groupby(cells["task"]).rank(ascending=False, method="average")
    cells["is_first"] = ranked & (key == key.groupby(cells["task"]).transform("max"))
    cells["n_ranked"] = ranked.groupby(cells["task"]).transform("sum").astype("int64")
    cells = cells.merge(_gains(metrics, primary), on=["task", "method"], how="left")
    cells["reference_value"] = cells["mean"] - sign * cells["gain"]
    with np.errstate(divide="ignore", invalid="ignore"):
        cells["gain_pct"] = np.where(cells["reference_value"] > 0, 100 * cells["gain"] / cells["reference_value"],
                                     np.nan)
    cells["p_holm"] = np.nan
    for idx in cells.groupby("method").groups.values():
        cells.loc[idx, "p_holm"] = holm(cells.loc[idx, "p_value"].to_numpy())
    verdict = np.where(cells["p_holm"] < 1 - level, np.sign(cells["gain"]), 0)
    cells["significance_holm"] = pd.array(np.where(cells["gain"].notna(), verdict, 0), dtype="Int64")
    cells.loc[cells["gain"].isna(), "significance_holm"] = pd.NA
    cols = ["task", "kind", "method", "family", "encoder", "metric", "value", "mean", "ci_low", "ci_high", "pooled",
            "rank", "is_first", "n_ranked", "reference", "reference_value", "gain", "gain_ci_low", "gain_ci_high",
            "gain_pct", "p_value", "significance", "p_holm", "significance_holm", "n_undefined", "status", "note"]
    spread = _seed_spread(metrics, primary)
    if spread is not None:
        cells = cells.merge(spread, on=["task", "method"], how="left")
        cells["n_seeds"] = cells["n_seeds"].fillna(0).astype("int64")
        at = cols.index("gain_ci_high") + 1  # beside the CI: training spread next to test sampling
        cols[at:at] = ["gain_seeds_mean", "gain_seeds_sd", "n_seeds"]
    return cells[cols]


def _gains(metrics: pd.DataFrame, primary: Mapping[str, str]) -> pd.DataFrame:
    """Signed gain over the validation-selected best expert: the mean over folds of the paired differences."""
    want = metrics["metric"] == metrics["task"].map({t: DELTA_PREFIX + m for t, m in primary.items()})
    delta = metrics[want & (metrics["fold"] == -1) & (_statistic(metrics) == "mean")]
    sign = delta["task"].map(primary).map(_direction).to_numpy()
    diff, low, high = delta["value"].to_numpy(), delta["ci_low"].to_numpy(), delta["ci_high"].to_numpy()
    out = pd.DataFrame({
        "task": delta["task"].to_numpy(), "method": delta["method"].to_numpy(),
        "reference": delta["reference"].to_numpy(),
        "gain": sign * diff,
        "gain_ci_low": np.where(sign > 0, low, -high), "gain_ci_high": np.where(sign > 0, high, -low),
        "p_value": delta["p_value"].to_numpy(), "n_undefined": delta["n_undefined"].to_numpy(),
    })
    sig = np.select([out["gain_ci_low"] > 0, out["gain_ci_high"] < 0], [1, -1], 0)
    out["significance"] = pd.array(np.where(out["gain"].notna(), sig, 0), dtype="Int64")
    out.loc[out["gain"].isna(), "significance"] = pd.NA
    return out


def _seed_spread(metrics: pd.DataFrame, primary: Mapping[str, str]) -> pd.DataFrame | None:
    """Signed gain per training seed → its mean and SD across seeds (None in a one-seed run).

    Only seeds with a defined gain count (``n_seeds``); the SD needs two of them. The spread is
    training randomness beside the CI (test sampling of seed 0), never pooled into it.
    """
    if "seed" not in metrics.columns:
        return None
    want = metrics["metric"] == metrics["task"].map({t: DELTA_PREFIX + m for t, m in primary.items()})
    rows = metrics[want & (metrics["statistic"] == "seed")]
    gain = rows["value"] * rows["task"].map(primary).map(_direction)
    grouped = gain.groupby([rows["task"], rows["method"]])
    return pd.DataFrame({"gain_seeds_mean": grouped.mean(), "gain_seeds_sd": grouped.std(ddof=1),
                         "n_seeds": grouped.count()}).reset_index()


# ----------------------------------------------------------------------------- summary
def summary_table(ranks: pd.DataFrame) -> pd.DataFrame:
    """Per method: wins out of its tasks, mean rank, mean gain, Holm-corrected wins/losses, missing cells.

    ``n_tasks`` counts the tasks the run expected the method on; ``wins_of`` reads like the
    paper's claim ("20/22"). Means are over the ``n_scored`` tasks with a value (ranks) or the
    ``n_paired`` tasks with a paired test (gains); ``n_missing`` says how many are not there.
    ``sig_wins``/``sig_losses`` count tasks whose gain is significant after Holm's correction
    across the method's tasks (``significance_holm``); the ranks keep the uncorrected verdicts.
    """
    g = ranks.groupby("method", sort=False)
    has_value = ranks["value"].notna()
    out = pd.DataFrame({
        "family": g["family"].first(),
        "n_tasks": g.size(),
        "n_scored": has_value.groupby(ranks["method"], sort=False).sum(),
        "wins": g["is_first"].sum(),
        "mean_rank": g["rank"].mean(),
        "mean_gain": g["gain"].mean(),
        "mean_gain_pct": g["gain_pct"].mean(),
        "n_paired": g["gain"].count(),
        "sig_wins": (ranks["significance_holm"] == 1).fillna(False).groupby(ranks["method"], sort=False).sum(),
        "sig_losses": (ranks["significance_holm"] == -1).fillna(False).groupby(ranks["method"], sort=False).sum(),
    })
    out["n_missing"] = out["n_tasks"] - out["n_scored"]
    ranked = g["rank"].count() > 0
    out["wins_of"] = [f"{w}/{n}" if r else "" for w, n, r in zip(out["wins"], out["n_tasks"], ranked, strict=True)]
    out["mean_gain_points"] = 100 * out["mean_gain"]
    out = out.reset_index()
    for col in ("n_tasks", "n_scored", "wins", "n_paired", "sig_wins", "sig_losses", "n_missing"):
        out[col] = out[col].astype("int64")
    out = out.sort_values(["wins", "mean_rank"], ascending=[False, True], na_position="last", kind="stable")
    return out[["method", "family", "n_tasks", "n_scored", "n_missing", "wins", "wins_of", "mean_rank",
                "mean_gain", "mean_gain_points", "mean_gain_pct", "n_paired", "sig_wins", "sig_losses"]] \
        .reset_index(drop=True)


def missing_cells(ranks: pd.DataFrame) -> pd.DataFrame:
    """The (task, method) cells without a primary-metric value, with the reason."""
    miss = ranks[ranks["value"].isna()]
    return miss[["task", "method", "family", "status", "note"]].reset_index(drop=True)

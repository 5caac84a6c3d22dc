"""The reference expert of each fold (ranked first on validation) and every method's gain over it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from pathfuse.config import Config, TaskSpec
from pathfuse.evaluation import foldstats
from pathfuse.evaluation.scoring import Scores
from pathfuse.evaluation.sources import Loaded, Source
from pathfuse.evaluation.table import DELTA_PREFIX, metric_row, missing_rows, undefined_note
from pathfuse.selection import rank_experts


def choose_reference(cfg: Config, task: TaskSpec, experts: list[Loaded], folds: list[int],
                     metric: str) -> tuple[dict[int, str | None], list[dict[str, Any]], dict[str, Any]]:
    """Per fold, the expert :func:`pathfuse.selection.rank_experts` ranks first on validation.

    Only experts with validation and test rows in the fold are eligible. Returns the choice
    (None where no expert is eligible), the ``val`` rows and the rankings (for the metadata).
    """
    alpha = float(cfg.settings.fusion.survival_alpha)
    chosen: dict[int, str | None] = {}
    rows: list[dict[str, Any]] = []
    rankings: dict[str, Any] = {}
    for fold in folds:
        eligible = [x for x in experts if not x.val(fold).empty and not x.test(fold).empty]
        edges = eligible[0].fold_edges(fold) if eligible else None
        ranked = rank_experts(task, {x.source.method: x.val(fold) for x in eligible}, task.encoders, metric,
                              edges, alpha)
        chosen[fold] = ranked[0].encoder if ranked else None
        rankings[str(fold)] = [r.as_dict() for r in ranked]
        by_name = {r.encoder: r for r in ranked}
        for x in experts:
            r = by_name.get(x.source.method)
            if r is None:
                rows.append(metric_row(task, x.source, fold, "val", metric, status="missing",
                                       note=f"no validation or test predictions for fold {fold}: not eligible"))
                continue
            rows += [metric_row(task, x.source, fold, "val", metric, r.value, n_samples=r.n_samples),
                     metric_row(task, x.source, fold, "val", "nll", r.nll, n_samples=r.n_samples)]
    return chosen, rows, rankings


def describe_reference(chosen: Mapping[int, str | None]) -> str:
    """``"uni_v2"`` if one expert won every fold, else ``"f0:uni_v2,f1:gigapath,…"``."""
    names = set(chosen.values())
    if len(names) == 1:
        return str(names.pop())
    return ",".join(f"f{fold}:{name}" for fold, name in sorted(chosen.items()))


def delta_rows(cfg: Config, task: TaskSpec, loaded: list[Loaded], missing: list[Source],
               chosen: Mapping[int, str | None], metric: str, scores: Scores,
               samples: Mapping[int, foldstats.FoldSample]) -> list[dict[str, Any]]:
    """Each method minus the fold's reference expert, per fold and as the mean over folds (paired bootstrap)."""
    level, delta = float(cfg.settings.report.ci_level), DELTA_PREFIX + metric
    folds, reference = sorted(chosen), describe_reference(chosen)
    rows = [r for s in missing for r in missing_rows(task, s, folds, delta, f"no prediction file {s.path}", reference)]
    references = {fold: name for fold, name in chosen.items() if name is not None}
    if len(references) < len(chosen):
        note = "no expert has validation and test predictions in every fold: no reference to compare with"
        return rows + [r for x in loaded for r in missing_rows(task, x.source, folds, delta, note, reference)]
    for item in loaded:
        own = scores[item.source.method]
        present = [f for f in folds if f in own]
        observed = {f: own[f][metric][0] - scores[references[f]][f][metric][0] for f in present}
        draws = {f: own[f][metric][1] - scores[references[f]][f][metric][1] for f in present}
        for f in folds:
            if f not in own:
                rows.append(metric_row(task, item.source, f, "test", delta, status="missing", reference=chosen[f],
                                       note=f"no test predictions for fold {f} in {item.source.path}"))
                continue
            undefined = np.isnan(observed[f])
            rows.append(metric_row(task, item.source, f, "test", delta, observed[f], n_samples=samples[f].n_rows[
                item.source.method], n_patients=len(samples[f].patients), status="undefined" if undefined else "ok",
                note=undefined_note(task, metric, [f]) if undefined else "", reference=chosen[f]))
        if len(present) < len(folds):
            rows.append(metric_row(task, item.source, -1, "test", delta, statistic="mean", status="missing",
                                   reference=reference, note=f"fold(s) {sorted(set(folds) - set(present))} missing"))
            continue
        stat = foldstats.mean_over_folds(observed, draws, level, delta, with_p=True)
        rows.append(metric_row(task, item.source, -1, "test", delta, stat.value, statistic="mean",
                               ci=(stat.ci_low, stat.ci_high), n_patients=sum(len(samples[f].patients) for f in folds),
                               n_undefined=stat.n_undefined, status="ok" if stat.folds_used else "undefined",
                               note=undefined_note(task, metric, stat.folds_undefined) if stat.folds_undefined else "",
                               reference=reference, p_value=stat.p_value))
    return rows


"""Gain and cost of the logit-level learners under ``train_on: oof | val | in_sample`` → JSON, docs table, figure.

Why: LogitProd's gate (and stacking) learns by default from the experts' out-of-fold training
logits, which cost ``experts.inner_folds`` inner-fold expert trainings per outer fold; ``val``
learns from the experts' validation logits instead (no inner-fold expert), ``in_sample`` from
their own training logits (the published choice). A lab picks by gain against cost, so this
measures both on the demo's 22 tasks, with the seed-to-seed spread (``experts.n_seeds`` = 2).

Design (2 shared CPU cores): one demo run (``--run``: a Snakemake working directory whose
config has ``experts.n_seeds: 2`` and a method reading out-of-fold logits, so its experts wrote
out-of-fold rows) gives the expert predictions of both seeds. Only the cheap logit-level methods
are refitted under each ``train_on``, through the library (:func:`pathfuse.fusion.run.fuse_task`,
:func:`pathfuse.evaluation.run.evaluate_task`), each variant in its own results folder whose
expert, feature and tile folders link to the run's. The other methods (Shazam, concat, the
averages, the oracle) are fitted once (seed 0) for the figure. Costs come from the files'
metadata: a method's own ``train_seconds`` summed over tasks and folds, plus, when it read
out-of-fold logits, all the inner-fold expert seconds (``inner_seconds`` of the experts: what
adding that method alone to a run costs); the outer experts every method reads are reported
apart. Gains: each task's gain of the primary metric over the validation-selected best expert
(seed s against seed s's own best expert), averaged over tasks.

    python benchmarks/logitprod_train_on.py --run /path/to/demo_run   # writes JSON, docs table, docs figure
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from pathfuse.config import Config
from pathfuse.evaluation.metrics import HIGHER_IS_BETTER
from pathfuse.evaluation.run import evaluate_task
from pathfuse.fusion import FUSERS
from pathfuse.fusion.run import fuse_task
from pathfuse.io import read_parquet, read_parquet_meta, write_json
from pathfuse.report import fusion_plots
from pathfuse.selection import primary_metric

REPO = Path(__file__).resolve().parents[1]
RESULT = REPO / "benchmarks" / "results" / "logitprod_train_on.json"
DOCS = REPO / "docs" / "methods.md"
FIGURE = REPO / "docs" / "cost_gain"
LEARNERS = ("logitprod", "stacking")  # logitprod_converged: L-BFGS grids on the tile tasks cost minutes per variant
MODES = ("oof", "val", "in_sample")
OTHERS = ("best_val_expert", "mean_logits", "mean_probs", "shazam", "concat", "oracle_expert")
LINKED = ("experts", "features", "tiles")
TABLE_START, TABLE_END = "<!-- train_on table: begin -->", "<!-- train_on table: end -->"


def ensure_run(workdir: Path, tasks: list[str] | None) -> dict[str, Any]:
    """The run's config (``tasks``: a subset); its experts (both seeds) are made with Snakemake if any is missing."""
    raw = yaml.safe_load((workdir / "config.yaml").read_text())
    raw["tasks"] = tasks or raw["tasks"]
    os.chdir(workdir)  # the demo config's paths are relative to the run's working directory
    cfg = Config.from_dict(raw)
    missing = [str(cfg.layout.expert_predictions(t.id, e, s)) for t in cfg.tasks for e in t.encoders
               for s in range(cfg.settings.experts.n_seeds) if not cfg.layout.expert_predictions(t.id, e, s).exists()]
    if missing:
        subprocess.run([sys.executable, "-m", "snakemake", *missing, "--cores", "2", "-s", str(REPO / "Snakefile"),
                        "--directory", str(workdir), "--configfile", str(workdir / "config.yaml")], check=True)
    return raw


def variant_config(raw: dict[str, Any], workdir: Path, name: str, methods: list[str], train_on: str,
                   n_seeds: int) -> Config:
    """The run's config, its own results folder (expert and feature folders linked), ``train_on`` for every learner."""
    results, run_results = workdir / "train_on" / name, workdir / raw.get("results_dir", "results")
    links = {results / f: run_results / f for f in LINKED}
    links.update({results / "seeds" / f"seed{s}" / "experts": run_results / "seeds" / f"seed{s}" / "experts"
                  for s in range(1, n_seeds)})  # each variant writes its own replicate fusion files
    for link, target in links.items():
        link.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() and not link.exists():
            link.symlink_to(target)
    fusion = {**raw.get("fusion", {}), "methods": methods}
    for learner in LEARNERS:
        fusion[learner] = {**fusion.get(learner, {}), "train_on": train_on}
    return Config.from_dict({**raw, "results_dir": str(results), "fusion": fusion,
                             "experts": {**raw.get("experts", {}), "n_seeds": n_seeds},
                             "report": {**raw.get("report", {}), "n_bootstrap": 50}})


def fit_and_score(cfg: Config, n_seeds: int) -> None:
    """Fuse every task on every seed, then evaluate it (the stage functions the rules call)."""
    for task in cfg.task_ids:
        for seed in range(n_seeds):
            fuse_task(cfg, task, seed)
        evaluate_task(cfg, task)


def gains(cfg: Config, methods: list[str]) -> pd.DataFrame:
    """(task, method, seed, gain): each seed's gain over its validation-selected expert, oriented so > 0 is better."""
    rows = []
    for task in cfg.task_ids:
        metric = primary_metric(cfg, cfg.task(task))
        df, _ = read_parquet(cfg.layout.metrics(task), schema="metrics")
        want = df[(df["metric"] == f"delta_{metric}") & (df["fold"] == -1) & df["method"].isin(methods)]
        want = want[want["statistic"] == "seed"] if "seed" in want else want[want["statistic"] == "mean"]
        sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
        for r in want.itertuples():
            rows.append({"task": task, "method": r.method, "seed": int(getattr(r, "seed", 0)), "gain": sign * r.value})
    return pd.DataFrame(rows)


def seconds(cfg: Config, methods: list[str], n_seeds: int) -> dict[str, Any]:
    """Own training seconds per (method, seed), and the experts' outer and inner-fold seconds per seed."""
    own = {m: [sum(float(f.get("train_seconds") or 0.0)
                   for t in cfg.task_ids
                   for f in read_parquet_meta(cfg.layout.fusion_predictions(t, m, s), schema="predictions")["folds"]
                   .values()) for s in range(n_seeds)] for m in methods}
    reads = {m: any(f.get("uses_inner_experts") for t in cfg.task_ids for f in read_parquet_meta(
        cfg.layout.fusion_predictions(t, m), schema="predictions")["folds"].values()) for m in methods}
    experts = {key: [sum(float(f.get(key) or 0.0) for t in cfg.tasks for e in t.encoders for f in read_parquet_meta(
        cfg.layout.expert_predictions(t.id, e, s), schema="predictions")["folds"].values()) for s in range(n_seeds)]
        for key in ("train_seconds", "inner_seconds")}
    return {"own": own, "reads_oof": reads, "outer_experts": experts["train_seconds"],
            "inner_experts": experts["inner_seconds"]}


def summarise(gain: pd.DataFrame, cost: dict[str, Any], mode: str) -> dict[str, dict[str, Any]]:
    """Per learner: mean gain (points) per seed and over seeds, the seeds' spread, and its cost."""
    out = {}
    for method in LEARNERS:
        per_seed = gain[gain["method"] == method].groupby("seed")["gain"].mean() * 100
        inner = float(np.mean(cost["inner_experts"])) if cost["reads_oof"][method] else 0.0
        own = float(np.mean(cost["own"][method]))
        out[method] = {"train_on": mode, "gain_points_per_seed": per_seed.round(3).tolist(),
                       "gain_points": float(per_seed.mean()), "seed_sd": float(per_seed.std(ddof=1)),
                       "n_tasks": int(gain[gain["method"] == method]["task"].nunique()),
                       "own_seconds": own, "required_expert_seconds": inner, "total_seconds": own + inner,
                       "reads_oof": bool(cost["reads_oof"][method])}
    return out


def markdown_table(results: dict[str, Any]) -> str:
    """The table docs/methods.md shows (between its markers)."""
    lines = ["| method | train_on | mean gain (points), seed 0 / seed 1 | mean over seeds ± sd | own seconds | "
             "+ inner-fold experts | total |", "|---|---|---|---|---:|---:|---:|"]
    for method in LEARNERS:
        for mode in MODES:
            r = results["variants"][mode][method]
            per = " / ".join(f"{g:+.2f}" for g in r["gain_points_per_seed"])
            lines.append(f"| {method} | {mode} | {per} | {r['gain_points']:+.2f} ± {r['seed_sd']:.2f} | "
                         f"{r['own_seconds']:.1f} | {r['required_expert_seconds']:.1f} | {r['total_seconds']:.1f} |")
    outer = results["outer_expert_seconds"]
    lines.append(f"\nOuter experts (read by every method, both seeds' mean): {outer:.1f} s. "
                 f"{results['n_tasks']} tasks, {results['n_seeds']} seeds; gains against each seed's own "
                 "validation-selected best expert.")
    return "\n".join(lines)


def figure(results: dict[str, Any], variant_gains: dict[str, pd.DataFrame], other: pd.DataFrame,
           other_cost: dict[str, Any]) -> None:
    """docs/cost_gain.png: every method (learners once per train_on), seed 0, through the report's figure code."""
    rows, points = [], []
    for mode, g in variant_gains.items():
        for method in LEARNERS:
            label = f"{method} ({mode})"
            r = results["variants"][mode][method]
            points.append({"method": label, "family": FUSERS.get(method).family,
                           "total_seconds_standalone": r["own_seconds"] + r["required_expert_seconds"]})
            rows += [{"task": x.task, "method": label, "family": FUSERS.get(method).family, "gain": x.gain}
                     for x in g[(g["method"] == method) & (g["seed"] == 0)].itertuples()]
    for method in OTHERS:
        points.append({"method": method, "family": FUSERS.get(method).family,
                       "total_seconds_standalone": other_cost["own"][method][0]})
        rows += [{"task": x.task, "method": method, "family": FUSERS.get(method).family, "gain": x.gain}
                 for x in other[other["method"] == method].itertuples()]
    fusion_plots.cost_gain(pd.DataFrame(points), pd.DataFrame(rows), results["outer_expert_seconds"], 0.95, FIGURE)
    FIGURE.with_suffix(".svg").unlink(missing_ok=True)  # the README shows the PNG


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="Snakemake working directory of a demo run")
    parser.add_argument("--tasks", nargs="*", help="a subset of the run's tasks (a quick check; default: all)")
    args = parser.parse_args()
    workdir = args.run.resolve()
    raw = ensure_run(workdir, args.tasks)
    n_seeds = int(raw["experts"]["n_seeds"])
    results: dict[str, Any] = {"run": str(workdir), "n_seeds": n_seeds, "variants": {}}
    variant_gains = {}
    for mode in MODES:
        cfg = variant_config(raw, workdir, mode, ["best_val_expert", *LEARNERS], mode, n_seeds)
        fit_and_score(cfg, n_seeds)
        variant_gains[mode] = gains(cfg, list(LEARNERS))
        cost = seconds(cfg, list(LEARNERS), n_seeds)
        results["variants"][mode] = summarise(variant_gains[mode], cost, mode)
        results["outer_expert_seconds"] = float(np.mean(cost["outer_experts"]))
        results["n_tasks"] = len(cfg.task_ids)
    others = variant_config(raw, workdir, "others", list(OTHERS), "oof", 1)
    fit_and_score(others, 1)
    other_cost = seconds(others, list(OTHERS), 1)
    results["others_seed0"] = {m: {"gain_points": float(g["gain"].mean() * 100), "own_seconds": other_cost["own"][m][0]}
                               for m, g in gains(others, list(OTHERS)).groupby("method")}
    oof, val = results["variants"]["oof"]["logitprod"], results["variants"]["val"]["logitprod"]
    results["default_rule"] = {"val_minus_oof_points": val["gain_points"] - oof["gain_points"],
                               "oof_seed_sd": oof["seed_sd"],
                               "val_within_oof_spread": abs(val["gain_points"] - oof["gain_points"]) <= oof["seed_sd"]}
    write_json(results, RESULT)
    text = DOCS.read_text()
    table = f"{TABLE_START}\n{markdown_table(results)}\n{TABLE_END}"
    DOCS.write_text(re.sub(re.escape(TABLE_START) + ".*?" + re.escape(TABLE_END), lambda _: table, text, flags=re.S))
    figure(results, variant_gains, gains(others, list(OTHERS)), other_cost)
    print(markdown_table(results))
    print(results["default_rule"])


if __name__ == "__main__":
    main()

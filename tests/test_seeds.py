"""Seed replicates (``experts.n_seeds``): opt-in jobs whose spread the tables report.

A default run is unchanged; replicates are their own jobs, paths and digests; the tables report
each method's gain spread across seeds beside seed 0's CI.
"""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from support.evaluation import make_config, write_task
from support.reduced_demo import snakemake_cmd, write_reduced_config

from pathfuse.config import Config
from pathfuse.evaluation.run import evaluate_task
from pathfuse.evaluation.table import DELTA_PREFIX
from pathfuse.io import read_parquet
from pathfuse.paths import Layout
from pathfuse.plan import Planner
from pathfuse.report import tables
from pathfuse.reproducibility import derive_seed
from pathfuse.seeds import replicate_parts, replicate_payload

TASKS = ["brca_idc_ilc", "surv_brca", "crc100k"]


def _digests(raw: dict, n_seeds: int | None) -> dict[str, str]:
    raw = copy.deepcopy(raw)
    raw.setdefault("experts", {}).pop("n_seeds", None)
    if n_seeds is not None:
        raw["experts"]["n_seeds"] = n_seeds
    plan = Planner(Config.from_dict(raw))
    enc = plan.cfg.task(TASKS[0]).encoders[0]
    out = {f"expert/{t}": plan.expert(t, enc).digest for t in TASKS}
    out |= {f"fuse/{t}": plan.fuse(t).digest for t in TASKS}
    out |= {f"evaluate/{t}": plan.evaluate(t).digest for t in TASKS}
    return out | {"report": plan.report().digest}


def test_a_default_run_keeps_its_digests_seeds_and_paths(demo_raw):
    absent, one, two = _digests(demo_raw, None), _digests(demo_raw, 1), _digests(demo_raw, 2)
    assert absent == one
    # Seed 0's expert and fuse jobs do not depend on how many seeds there are; evaluate/report do.
    assert {j for j in one if one[j] != two[j]} == {*(f"evaluate/{t}" for t in TASKS), "report"}
    assert replicate_parts(0) == () and replicate_payload(0) == {}
    assert derive_seed(7, "t", "e", 0, *replicate_parts(0)) == derive_seed(7, "t", "e", 0)
    assert derive_seed(7, "t", "e", 0, *replicate_parts(1)) != derive_seed(7, "t", "e", 0)
    plan = Planner(Config.from_dict(demo_raw))
    assert "replicates" not in plan.evaluate(TASKS[0]).inputs


def test_replicate_paths_and_digests(demo_raw):
    layout, r = Layout(Path("results")), Path("results")
    assert layout.expert_predictions("t", "e") == r / "experts/t/e/predictions.parquet"
    assert layout.expert_predictions("t", "e", 0) == layout.expert_predictions("t", "e")
    assert layout.expert_predictions("t", "e", 2) == r / "seeds/seed2/experts/t/e/predictions.parquet"
    assert layout.expert_attention("t", "e", "{seed}") == r / "seeds/seed{seed}/experts/t/e/attention.parquet"
    assert layout.fusion_predictions("t", "m", 1) == r / "seeds/seed1/fusion/t/m/predictions.parquet"
    assert layout.fusion_manifest("t", 1) == r / "seeds/seed1/fusion/t/_methods.parquet"
    assert layout.feature_shard("e", "c", "shard0000") == r / "features/e/c/_shards/shard0000.parquet"

    raw = copy.deepcopy(demo_raw)
    raw.setdefault("experts", {})["n_seeds"] = 3
    plan = Planner(Config.from_dict(raw))
    task = TASKS[0]
    enc = plan.cfg.task(task).encoders[0]
    digests = {plan.expert(task, enc, s).digest for s in range(3)}
    assert len(digests) == 3 and plan.expert(task, enc, 1).digest == plan.expert(task, enc, 1).digest
    assert plan.expert(task, enc, 2).inputs == plan.expert(task, enc, 0).inputs  # features, labels, splits
    assert len({plan.fuse(task, s).digest for s in range(3)}) == 3
    assert plan.fuse(task, 2).inputs["experts"] == [str(plan.layout.expert_predictions(task, e, 2))
                                                    for e in plan.cfg.task(task).encoders]
    replicates = plan.evaluate(task).inputs["replicates"]
    assert str(plan.layout.expert_predictions(task, enc, 2)) in replicates
    assert str(plan.layout.fusion_manifest(task, 1)) in replicates  # it lists the replicate's method files
    assert not any("seed0" in p for p in replicates)


def _replicate_cfg(cfg: Config, seed: int) -> Config:
    """The same run rooted at replicate ``seed``'s folder: its layout writes the replicate's paths."""
    raw = {**copy.deepcopy(cfg.raw), "results_dir": str(cfg.layout.seed_root(seed))}
    raw["experts"]["n_seeds"] = 1
    return Config.from_dict(raw)


def test_spread_columns_from_each_seeds_own_reference(tmp_path):
    one = make_config(tmp_path, ["brca_idc_ilc"], methods=["logitprod"])
    cfg = Config.from_dict({**copy.deepcopy(one.raw), "experts": {**one.raw["experts"], "n_seeds": 3}})
    task, delta = "brca_idc_ilc", DELTA_PREFIX + "auroc"
    strengths = [{"demo_vit_a": 0.5, "demo_vit_b": 2.0, "demo_vit_c": 1.0, "logitprod": 2.5},
                 {"demo_vit_a": 2.2, "demo_vit_b": 0.4, "demo_vit_c": 1.0, "logitprod": 2.0},  # a's turn
                 {"demo_vit_a": 0.5, "demo_vit_b": 1.8, "demo_vit_c": 1.1, "logitprod": 1.2}]
    write_task(cfg, task, strengths[0])
    own = {}
    for s in (1, 2):
        replica = _replicate_cfg(cfg, s)
        write_task(replica, task, strengths[s])
        df, _ = read_parquet(evaluate_task(replica, task), schema="metrics")  # that seed scored alone
        own[s] = df[(df["metric"] == delta) & (df["statistic"] == "mean")].set_index("method")
    # A one-seed evaluation of seed 0 is the same table, without the seed rows and column.
    base, _ = read_parquet(evaluate_task(_replicate_cfg(cfg, 0), task), schema="metrics")
    df, meta = read_parquet(evaluate_task(cfg, task), schema="metrics")
    assert "seed" not in base.columns and (df.loc[df["statistic"] != "seed", "seed"] == 0).all()
    seed0_rows = df[df["statistic"] != "seed"].drop(columns="seed").reset_index(drop=True)
    pd.testing.assert_frame_equal(seed0_rows, base)
    assert meta["n_seeds"] == 3
    assert meta["seed_references"]["1"] == own[1]["reference"].iloc[0] == "demo_vit_a"

    seeds = df[df["statistic"] == "seed"].pivot(index="method", columns="seed", values="value")
    mean0 = base[(base["metric"] == delta) & (base["statistic"] == "mean")].set_index("method")["value"]
    pd.testing.assert_series_equal(seeds[0], mean0.reindex(seeds.index), check_names=False)
    for s in (1, 2):  # each seed's gain is against its own validation-selected expert
        pd.testing.assert_series_equal(seeds[s], own[s]["value"].reindex(seeds.index), check_names=False)

    metrics = df
    expected = metrics.drop_duplicates(["task", "method"])[["task", "kind", "method", "family", "encoder"]]
    ranks = tables.ranks_table(tables.benchmark_table(metrics), metrics, expected, {task: "auroc"}) \
        .set_index("method")
    cols = list(ranks.columns)
    assert cols[cols.index("gain_ci_high") + 1:cols.index("gain_ci_high") + 4] == [
        "gain_seeds_mean", "gain_seeds_sd", "n_seeds"]
    assert ranks.loc["logitprod", "gain"] == pytest.approx(mean0["logitprod"])  # the reported gain: seed 0's
    assert ranks.loc["logitprod", "gain_seeds_mean"] == pytest.approx(seeds.loc["logitprod"].mean())
    assert ranks.loc["logitprod", "gain_seeds_sd"] == pytest.approx(np.std(seeds.loc["logitprod"], ddof=1))
    assert (ranks["n_seeds"] == 3).all()
    # A one-seed table has none of these columns.
    plain = tables.ranks_table(tables.benchmark_table(base), base, expected, {task: "auroc"})
    assert not {"gain_seeds_mean", "gain_seeds_sd", "n_seeds"} & set(plain.columns)


def test_dry_run_plans_replicate_jobs(tmp_path):
    config = write_reduced_config(tmp_path)
    raw = yaml.safe_load(config.read_text())
    raw.setdefault("experts", {})["n_seeds"] = 2
    config.write_text(yaml.safe_dump(raw))
    out = subprocess.run([*snakemake_cmd(tmp_path, config, "-n", "--quiet", "rules")], capture_output=True,
                         text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    for rule in ("expert_replicate", "fuse_replicate", "expert", "fuse", "evaluate"):
        assert any(line.split()[:1] == [rule] for line in text.splitlines()), (rule, text[-3000:])

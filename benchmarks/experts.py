"""Benchmark of the expert stage: the head bank against the per-head loop, and the full-scale bill.

Target (issue 24): an expert job at a real lab's scale, gated ABMIL on 1,000 bags × 2,000 tiles
× 1,536 dims with 5 outer × 5 inner folds (30 heads). The per-head loop (each head trained
alone, every bag re-read from disk in every epoch: the expert stage before the head bank) was
extrapolated to 81 h per (task, encoder) on 2 CPU cores. This script measures, on the same
machine, the same bags and in one run:

1. ``demo_size``: a job of 30 heads on demo-size bags (per-step overhead rules): the loop
   (``train_bank`` with one head at a time over bags read from disk per batch, which is
   bit-identical to ``pathfuse.training.fit``) against the bank (all heads, bags held in memory);
2. ``full_size_bags``: the same at 2,000 × 1,536 bags, scaled down (fewer bags and heads, one
   epoch), as seconds per head-bag step;
3. ``optimizer_step``: one Adam step of 30 ABMIL heads, pathfuse's hand-written Adam (the
   bank's) against torch.optim's multi-tensor (foreach) and fused Adam;
4. ``extrapolated_full_scale``: hours per (task, encoder) at full scale from (2), next to the
   loop's 81 h.

Run: ``nice -n 10 python benchmarks/experts.py`` (a few minutes on 2 cores); writes
``benchmarks/results/experts.json``. ``--device cuda`` times a GPU when one is present.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
ENCODER = "demo_vit_a"  # any registry name; the features written here set the dimension
COHORT = "bench"


def write_cohort(root: Path, n_bags: int, n_tiles: int, dim: int, n_shards: int = 4) -> float:
    """Full-size float16 bags + feature manifests + label table; returns seconds spent."""
    from pathfuse.io import write_parquet, write_safetensors
    from pathfuse.paths import Layout, shard_name

    start = time.perf_counter()
    layout, rng = Layout(root / "results"), np.random.default_rng(0)
    ids = [f"B{i:05d}" for i in range(n_bags)]
    labels = rng.integers(0, 2, n_bags)
    for shard, chunk in enumerate(np.array_split(np.arange(n_bags), n_shards)):
        rows = []
        for i in chunk:
            feats = rng.standard_normal((n_tiles, dim), dtype=np.float32).astype(np.float16)
            feats[:50, labels[i]] += 1.0  # a weak planted signal
            path = layout.features(ENCODER, COHORT, ids[i])
            write_safetensors({"features": feats, "coords": np.zeros((n_tiles, 2), np.int64)}, path, {})
            rows.append(
                {
                    "slide_id": ids[i],
                    "status": "ok",
                    "reason": "",
                    "n_tiles": n_tiles,
                    "dim": dim,
                    "features_path": str(path),
                }
            )
        write_parquet(
            pd.DataFrame(rows),
            layout.feature_shard(ENCODER, COHORT, shard_name(shard)),
            schema="feature_shard",
        )
    pd.DataFrame({"slide_id": ids, "case_id": ids, "label": labels}).to_csv(root / "labels.csv", index=False)
    return time.perf_counter() - start


def make_config(root: Path, epochs: int, inner_folds: int, device: str, n_folds: int = 5, n_shards: int = 4,
                in_memory_gib: float = 8, threads: int = 1):
    from pathfuse.config import Config

    registry = root / "tasks.yaml"
    registry.write_text(
        yaml.safe_dump(
            {
                "bench": {
                    "kind": "wsi_classification",
                    "cohort": COHORT,
                    "label_column": "label",
                    "classes": [0, 1],
                    "split": {"source": "kfold", "n_folds": 5},
                    "metrics": ["auroc"],
                    "primary_metric": "auroc",
                    "lp22": False,
                }
            }
        )
    )
    return Config.from_dict(
        {
            "results_dir": str(root / "results"),
            "seed": 0,
            "registries": {"tasks": str(registry),
                           "encoders": str(REPO / "src" / "pathfuse" / "resources" / "encoders.yaml")},
            "encoders": [ENCODER],
            "tasks": ["bench"],
            "cohorts": {COHORT: {"slides": str(root / "none" / "*.tiff"), "n_shards": n_shards}},
            "task_data": {"bench": {"labels": str(root / "labels.csv"), "n_folds": n_folds}},
            "experts": {
                "inner_folds": inner_folds,
                "device": device,
                "features_in_memory_gib": in_memory_gib,
                "torch_threads": threads,
                "heads": {"wsi_classification": {"epochs": epochs}},
            },
        }
    )


def heads_of(cfg, held: bool):
    """The job's heads (every fold's outer and inner models) and what trains them."""
    from pathfuse.experts.fold import fold_heads, plan_fold
    from pathfuse.experts.job import Job
    from pathfuse.experts.resume import fold_fingerprint
    from pathfuse.reproducibility import derive_seed

    job = Job.create(cfg, "bench", ENCODER)
    assert (job.held_bytes is not None) == held
    heads, seeds = [], []
    for fold in job.folds:
        plan = plan_fold(job, fold, fold_fingerprint(job, fold))
        heads += fold_heads(job, plan)
        seeds += [plan.seed] + [derive_seed(plan.seed, "inner", j) for j in range(len(plan.partitions))]
    return job, heads, seeds


def train(job, heads, seed: int) -> float:
    """Seconds to train ``heads`` in one bank."""
    from pathfuse.heads.bank import BankRecipe, train_bank

    r = job.recipe
    start = time.perf_counter()
    train_bank(heads, (job.dataset(job.samples, {}, True, seed + 1), job.dataset(job.samples, {}, False, seed)),
               job.collate, BankRecipe(epochs=r.epochs, lr=r.lr, weight_decay=r.weight_decay,
                                       batch_size=r.batch_size, patience=r.patience, monitor=r.monitor,
                                       mode="min" if r.monitor == "loss" else "max"),
               seed=seed, device=job.device)
    if job.device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def loop_vs_bank(root: Path, bags: int, tiles: int, dim: int, folds: int, inner: int, epochs: int,
                 device: str, loop_heads: int | None = None) -> dict:
    """The same heads trained one at a time from disk (the loop) and together from memory (the bank).

    ``loop_heads`` times only that many heads of the loop (at full-size bags) and scales by
    their share of the job's head-bag steps.
    """
    write_cohort(root, bags, tiles, dim)
    cfg = make_config(root, epochs, inner, device, folds)
    streamed = make_config(root, epochs, inner, device, folds, in_memory_gib=0)
    job, heads, seeds = heads_of(streamed, held=False)
    steps = [epochs * (len(h.train) + len(h.val)) for h in heads]
    timed = range(len(heads)) if loop_heads is None else range(loop_heads)
    loop = sum(train(job, [heads[i]], seeds[i]) for i in timed)
    loop *= sum(steps) / sum(steps[i] for i in timed)
    load = time.perf_counter()
    job, heads, seeds = heads_of(cfg, held=True)
    load = time.perf_counter() - load
    bank = train(job, heads, seeds[0])
    return {
        "bags": bags, "tiles": tiles, "dim": dim, "folds": folds, "inner_folds": inner, "epochs": epochs,
        "heads": len(heads), "head_bag_steps": sum(steps), "loop_heads_timed": len(timed),
        "loop_seconds": loop, "bank_seconds": bank, "bank_job_load_seconds": load,
        "loop_head_bags_per_s": sum(steps) / loop, "bank_head_bags_per_s": sum(steps) / bank,
        "speedup": loop / bank,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def optimizer_step(heads: int = 30, dims: tuple[int, ...] = (48, 1536)) -> dict:
    """Seconds per Adam step of ``heads`` ABMIL heads: pathfuse's Adam (the bank's) vs torch.optim's."""
    from pathfuse.heads.abmil import ABMIL
    from pathfuse.optimizers import Adam

    out = {}
    for dim in dims:
        params = [p for m in [ABMIL(dim, 2) for _ in range(heads)] for p in m.parameters()]
        for p in params:
            p.grad = torch.randn_like(p)
        optimisers = {"pathfuse_adam": Adam(params, lr=2e-4, weight_decay=1e-5),
                      "torch_foreach": torch.optim.Adam(params, lr=2e-4, weight_decay=1e-5, foreach=True),
                      "torch_fused": torch.optim.Adam(params, lr=2e-4, weight_decay=1e-5, fused=True)}
        for name, opt in optimisers.items():
            opt.step()
            start = time.perf_counter()
            for _ in range(5):
                opt.step()
            out[f"dim{dim}_{name}_seconds"] = (time.perf_counter() - start) / 5
    return {"heads": heads, **out}


def extrapolate(seconds_per_head_bag_step: float, n_bags: int = 1000, n_folds: int = 5, inner: int = 5,
                epochs: int = 20, val_fraction: float = 0.15) -> dict:
    """Hours per (task, encoder) at full scale: the job's head-bag steps at the measured rate."""
    n_test = n_bags / n_folds
    n_val = round(val_fraction * (n_bags - n_test))
    n_train = n_bags - n_test - n_val
    outer = epochs * (n_train + n_val) * seconds_per_head_bag_step
    inner_fold = epochs * inner * (n_train * (inner - 1) / inner + n_val) * seconds_per_head_bag_step
    return {"n_bags": n_bags, "n_folds": n_folds, "inner_folds": inner, "epochs": epochs,
            "outer_seconds": outer, "inner_seconds": inner_fold, "seconds_per_fold": outer + inner_fold,
            "hours_per_task_encoder": n_folds * (outer + inner_fold) / 3600}


def machine(device: str) -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device,
        "load_average_at_start": os.getloadavg(),
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "experts.json")
    args = parser.parse_args()
    from pathfuse.io import write_json

    logging.getLogger("pathfuse").setLevel(logging.WARNING)
    result: dict[str, Any] = {"benchmark": "experts", "machine": machine(args.device)}
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        result["demo_size"] = loop_vs_bank(Path(tmp) / "demo", 100, 8, 48, 5, 5, 3, args.device)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        result["full_size_bags"] = loop_vs_bank(Path(tmp) / "full", 20, 2000, 1536, 2, 2, 1, args.device,
                                                loop_heads=2)
    torch.set_num_threads(1)
    result["optimizer_step"] = optimizer_step()
    full = result["full_size_bags"]
    result["extrapolated_full_scale"] = {
        "loop_before_bank_hours": 81.35,  # the earlier experts.json (per-head loop, 2 cores)
        "loop": extrapolate(full["loop_seconds"] / full["head_bag_steps"]),
        "bank": extrapolate(full["bank_seconds"] / full["head_bag_steps"]),
    }
    # per outer fold and expert, the inner models' share (read by benchmarks/fusion_cost.py)
    result["extrapolated_full_scale"]["inner_seconds"] = result["extrapolated_full_scale"]["bank"]["inner_seconds"]
    result["notes"] = NOTES
    write_json(result, args.out)
    print(json.dumps(result, indent=2))


NOTES = (
    "Same machine, same bags, one run. loop = each head trained alone (a one-head bank, bit-identical to "
    "pathfuse.training.fit) with bags read from disk per batch; bank = all heads of the job together, bags "
    "held in memory. head-bag steps = epochs x (training + validation bags) summed over heads. full_size_bags "
    "times 2 of the loop's heads and scales by their share of head-bag steps. Extrapolation: the job's "
    "head-bag steps at full scale (5 outer x 5 inner folds, 20 epochs, 1,000 bags) at the measured rate; "
    "prediction (a few % of the bill) is left out of both."
)


if __name__ == "__main__":
    main()

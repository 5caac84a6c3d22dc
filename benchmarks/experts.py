"""Benchmark of the expert stage: seconds per (task, encoder, fold) and peak memory.

Target (issue 4): gated ABMIL on 1,000 bags × 2,000 tiles × 1,536 dims (a 10,000-slide cohort
must train with bounded memory). That cohort is 6 GB of float16 features and a full fold is
hours of CPU time, so this script measures at a reduced scale with full-size bags and
extrapolates from measured per-bag costs:

1. writes a cohort of ``--bags`` full-size bags (float16 safetensors, as the embedding stage);
2. runs the real stage entry ``pathfuse.experts.run.train_experts`` on it (all folds, inner folds,
   ``--epochs`` epochs) and records seconds per fold;
3. times training steps and prediction per bag on that cohort;
4. measures the peak RSS of the stage in child processes on two cohort sizes: with
   memory-mapped bags it must not grow with the number of bags;
5. extrapolates seconds per fold at full scale (1,000 bags, 5 folds, 5 inner folds, 20 epochs)
   from the per-bag costs.

Run: ``python benchmarks/experts.py`` (a few minutes on 2 cores); writes
``benchmarks/results/experts.json``. ``--device cuda`` times a GPU when one is present.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
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


def make_config(root: Path, epochs: int, inner_folds: int, device: str, n_folds: int = 5, n_shards: int = 4):
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
                "heads": {"wsi_classification": {"epochs": epochs}},
            },
        }
    )


def run_stage(root: Path, epochs: int, inner_folds: int, device: str, n_folds: int = 5) -> dict:
    """The real stage on the written cohort: wall seconds, per-fold seconds, peak RSS."""
    from pathfuse.experts.run import train_experts
    from pathfuse.io import read_parquet

    cfg = make_config(root, epochs, inner_folds, device, n_folds)
    start = time.perf_counter()
    path = train_experts(cfg, "bench", ENCODER)
    wall = time.perf_counter() - start
    _, meta = read_parquet(path, schema="predictions")
    folds = meta["folds"]
    return {
        "wall_seconds": wall,
        "seconds_per_fold": wall / len(folds),
        "outer_train_seconds": [f["train_seconds"] for f in folds.values()],
        "inner_train_seconds": [f["inner_seconds"] for f in folds.values()],
        "n_train": folds["0"]["n_train"],
        "n_val": folds["0"]["n_val"],
        "n_test": folds["0"]["n_test"],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def per_bag_costs(root: Path, n_bags: int, device: str, batch_size: int = 16) -> dict:
    """Seconds per bag for a training step (read + forward + backward + Adam) and prediction."""
    from pathfuse.data.bags import BagDataset, BagStore, cohort_feature_paths, collate_bags
    from pathfuse.heads import build_head
    from pathfuse.training import make_loader, predict, to_device

    cfg = make_config(root, 1, 2, device)
    store = BagStore(cohort_feature_paths(cfg, ENCODER, COHORT)[0])
    slides = [[s] for s in sorted(store.paths)][:n_bags]
    data = BagDataset(store, slides, {"label": np.zeros(len(slides), dtype=np.int64)})
    loader = make_loader(data, batch_size, shuffle=True, seed=0, collate_fn=collate_bags)
    model = build_head("abmil", store.shape(slides[0][0])[1], 2).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    read_s = time.perf_counter()
    for i in range(len(slides)):
        data[i]
    read_s = (time.perf_counter() - read_s) / len(slides)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    start = time.perf_counter()
    for batch in loader:
        batch = to_device(batch, device)
        loss = torch.nn.functional.cross_entropy(model(**batch["inputs"]), batch["label"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    sync()
    train_s = (time.perf_counter() - start) / len(slides)
    start = time.perf_counter()
    predict(model, make_loader(data, batch_size, shuffle=False, collate_fn=collate_bags), device=device)
    sync()
    predict_s = (time.perf_counter() - start) / len(slides)
    return {
        "read_seconds_per_bag": read_s,
        "train_seconds_per_bag": train_s,
        "predict_seconds_per_bag": predict_s,
    }


def extrapolate(
    costs: dict,
    n_bags: int = 1000,
    n_folds: int = 5,
    inner: int = 5,
    epochs: int = 20,
    val_fraction: float = 0.15,
) -> dict:
    """Seconds per (task, encoder, fold) at full scale from per-bag costs (the stage's schedule)."""
    n_test = n_bags / n_folds
    n_val = round(val_fraction * (n_bags - n_test))
    n_train = n_bags - n_test - n_val
    t, p = costs["train_seconds_per_bag"], costs["predict_seconds_per_bag"]
    outer = epochs * (n_train * t + n_val * p) + n_bags * p  # train+val epochs, then predict all splits
    inner_fit = n_train * (inner - 1) / inner
    inner_total = inner * (epochs * (inner_fit * t + n_val * p) + (n_train / inner) * p)
    return {
        "n_bags": n_bags,
        "n_folds": n_folds,
        "inner_folds": inner,
        "epochs": epochs,
        "n_train": n_train,
        "n_val": n_val,
        "n_test": n_test,
        "outer_seconds": outer,
        "inner_seconds": inner_total,
        "seconds_per_fold": outer + inner_total,
        "hours_per_task_encoder": n_folds * (outer + inner_total) / 3600,
    }


def child(args: argparse.Namespace) -> None:
    """Peak-RSS probe: write a cohort and run the stage in a fresh process; print JSON."""
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        root = Path(tmp)
        write_cohort(root, args.bags, args.tiles, args.dim)
        print(json.dumps(run_stage(root, 1, 2, args.device, n_folds=2)))


def rss_probe(args: argparse.Namespace, n_bags: int) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--bags",
        str(n_bags),
        "--tiles",
        str(args.tiles),
        "--dim",
        str(args.dim),
        "--device",
        args.device,
        "--tmp",
        str(args.tmp),
    ]
    out = subprocess.run(
        cmd, check=True, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "bags": n_bags,
        "cohort_gib": n_bags * args.tiles * args.dim * 2 / 2**30,
        "peak_rss_mib": result["peak_rss_mib"],
        "wall_seconds": result["wall_seconds"],
    }


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
    parser.add_argument("--bags", type=int, default=40, help="bags written for the stage run")
    parser.add_argument("--tiles", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=1536)
    parser.add_argument("--epochs", type=int, default=1, help="epochs of the measured stage run")
    parser.add_argument("--inner-folds", type=int, default=2)
    parser.add_argument(
        "--rss-bags",
        type=int,
        nargs=2,
        default=[16, 64],
        help="cohort sizes of the peak-RSS probe (2 folds, 2 inner folds, 1 epoch)",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "experts.json")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    from pathfuse.io import write_json

    result: dict[str, Any] = {
        "benchmark": "experts",
        "machine": machine(args.device),
        "bag": {"tiles": args.tiles, "dim": args.dim, "bytes_float16": args.tiles * args.dim * 2},
    }
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        root = Path(tmp)
        result["write_seconds"] = write_cohort(root, args.bags, args.tiles, args.dim)
        result["stage_run"] = {
            "bags": args.bags,
            "folds": 5,
            "inner_folds": args.inner_folds,
            "epochs": args.epochs,
            **run_stage(root, args.epochs, args.inner_folds, args.device),
        }
        result["per_bag"] = per_bag_costs(root, min(args.bags, 32), args.device)
    result["extrapolated_full_scale"] = extrapolate(result["per_bag"])
    at_run_scale = extrapolate(result["per_bag"], args.bags, 5, args.inner_folds, args.epochs)
    result["extrapolation_check"] = {  # the same formula at the measured run's scale
        "predicted_seconds_per_fold": at_run_scale["seconds_per_fold"],
        "measured_seconds_per_fold": result["stage_run"]["seconds_per_fold"],
    }
    result["peak_rss_by_cohort_size"] = [rss_probe(args, n) for n in args.rss_bags]
    result["notes"] = (
        "stage_run: the real stage (all 5 folds, inner folds, checkpointing, Parquet) at reduced scale with "
        "full-size bags. extrapolated_full_scale: outer model = epochs x (train steps + validation) + prediction "
        "of every bag; inner models likewise on (k-1)/k of train; from per_bag costs measured here. Peak RSS is "
        "measured in fresh processes on two cohort sizes: bags are read one at a time from memory-mapped "
        "safetensors, so it does not grow with the cohort (a batch of 16 bags x 2000 x 1536 float32 is 0.2 GB)."
    )
    write_json(result, args.out)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

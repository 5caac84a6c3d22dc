"""Synthetic prediction files in the contract shape, for the evaluation and report tests.

``make_config`` builds a run config whose layout the writers fill; ``write_task`` writes every
method of a task with a signal strength each, so the metrics tables have known orders.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pathfuse.config import Config, TaskSpec, load_yaml
from pathfuse.io import write_parquet
from support.reduced_demo import REPO

ENCODERS = ["demo_vit_a", "demo_vit_b", "demo_vit_c"]
SPLIT_SIZES = {"train": 30, "val": 40, "test": 60}
FAMILIES = {**dict.fromkeys(ENCODERS, "expert"), "logitprod": "fuser", "shazam": "fuser", "oracle_expert": "oracle"}


def make_config(root: Path, tasks: list[str], methods: list[str] | None = None, n_folds: int = 2,
                **report) -> Config:
    """A run config rooted at ``root`` (slide paths need not exist: nothing here reads slides)."""
    resources = REPO / "src" / "pathfuse" / "resources"
    registry = load_yaml(resources / "tasks.yaml")
    tile = [t for t in tasks if registry[t]["kind"] == "tile_classification"]
    task_data = {t: {"cohort": "demo", "labels": "labels.csv", "splits": "splits_{fold}.csv", "n_folds": n_folds}
                 for t in tasks if t not in tile}
    task_data.update({t: {"dataset": f"demo_{t}"} for t in tile})
    raw = {
        "results_dir": str(root / "results"), "seed": 7,
        "registries": {"tasks": str(resources / "tasks.yaml"), "encoders": str(resources / "encoders.yaml")},
        "encoders": ENCODERS, "tasks": tasks, "cohorts": {"demo": {"slides": str(root / "*.tiff")}},
        "tile_datasets": {f"demo_{t}": {"path": str(root / t)} for t in tile},
        "task_data": task_data, "fusion": {"methods": list(methods or [])},
        "report": {"n_bootstrap": 10, **report},
    }
    return Config.from_dict(raw)


def synthetic_predictions(task: TaskSpec, strength: float, seed: int, folds: int = 2,
                          gates: int | None = None) -> pd.DataFrame:
    """Rows in the ``predictions`` shape whose logits carry ``strength`` × the true signal.

    Patients are the same for every method of a task (seeded by the task only), each patient in
    the test split of exactly one fold, as in k-fold cross-validation.
    """
    base = np.random.default_rng(zlib.crc32(task.id.encode()))
    noise = np.random.default_rng(seed)
    frames = []
    for fold in range(folds):
        for split, n in SPLIT_SIZES.items():
            pid = [f"{split}{fold}_{i:03d}" if split != "test" else f"p{fold}_{i:03d}" for i in range(n)]
            frame = pd.DataFrame({"fold": np.int32(fold), "split": split, "oof": False,
                                  "sample_id": [f"{p}_s" for p in pid], "patient_id": pid})
            if task.kind == "survival":
                risk = base.normal(size=n)
                frame["time"] = 20 * np.exp(-risk) * base.lognormal(0, 0.3, size=n) + 1
                frame["event"] = (base.random(n) < 0.7).astype(np.int8)
                frame["label"] = np.int64(-1)
                hazard = strength * risk[:, None] + noise.normal(size=(n, task.n_outputs)) - 1
                frame["logits"] = list(hazard.astype(np.float32))
            else:
                c = task.n_outputs
                y = base.integers(0, c, size=n)
                frame["label"] = y.astype(np.int64)
                frame["time"], frame["event"] = np.nan, np.int8(-1)
                frame["logits"] = list((strength * np.eye(c)[y] + noise.normal(size=(n, c))).astype(np.float32))
            frame["embedding"] = None
            if gates:
                frame["gate_weights"] = pd.Series(_gates(noise, n, gates, len(ENCODERS)), index=frame.index)
            else:
                frame["gate_weights"] = None
            frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _gates(rng: np.random.Generator, n: int, width: int, n_experts: int) -> list[np.ndarray]:
    """Per-sample gate weights, bin-major: each group of ``n_experts`` sums to 1."""
    groups = rng.dirichlet(np.linspace(1, 3, n_experts), size=(n, width // n_experts))
    return list(groups.reshape(n, width).astype(np.float32))


def write_predictions(cfg: Config, task: str, method: str, family: str, strength: float, seed: int,
                      encoders: list[str] | None = None, seconds: float = 1.0) -> Path:
    """Write one method's synthetic predictions where the layout expects them."""
    spec = cfg.task(task)
    folds = spec.n_folds
    gates = None
    if method == "logitprod":
        gates = len(encoders or ENCODERS) * ((spec.n_bins + 1) if spec.kind == "survival" else 1)
    df = synthetic_predictions(spec, strength, seed, folds, gates)
    meta: dict[str, Any] = {
        "task": task, "kind": spec.kind, "method": method, "family": family, "encoders": encoders or ENCODERS,
        "classes": None if spec.kind == "survival" else list(spec.display_classes), "seed": seed,
        "folds": {str(f): {"train_seconds": seconds * (f + 1), "params": int(seconds * 1000), "flops": None,
                           "best_epoch": 3, "carve_val": False, "n_train": 30, "n_val": 40, "n_test": 60}
                  for f in range(folds)},
    }
    if spec.kind == "survival":
        meta["n_bins"] = spec.n_bins
        meta["bin_edges"] = {str(f): [0.0, 10.0, 25.0, 60.0, 1e9] for f in range(folds)}
    path = (cfg.layout.expert_predictions(task, method) if family == "expert"
            else cfg.layout.fusion_predictions(task, method))
    return write_parquet(df, path, schema="predictions", meta=meta)


def write_task(cfg: Config, task: str, strengths: dict[str, float], skip: tuple[str, ...] = ()) -> None:
    """Experts demo_vit_a/b/c and the given fusion methods, with a strength each."""
    for i, (method, strength) in enumerate(strengths.items()):
        if method in skip:
            continue
        family = FAMILIES.get(method, "baseline")
        write_predictions(cfg, task, method, family, strength, seed=100 + i, seconds=1.0 + 9 * (method == "shazam"))

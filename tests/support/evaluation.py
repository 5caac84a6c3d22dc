"""Synthetic prediction files in the contract shape, for the evaluation and report tests.

``make_config`` builds a run config whose layout the writers fill; ``write_task`` writes every
method of a task with a signal strength each, so the metrics tables have known orders;
``report_run`` is the small run the report tests read.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pathfuse.config import Config, TaskSpec, load_yaml
from pathfuse.evaluation.run import evaluate_task
from pathfuse.fusion.logitprod import gate_movement
from pathfuse.io import write_parquet
from support.reduced_demo import REPO

ENCODERS = ["demo_vit_a", "demo_vit_b", "demo_vit_c"]
SPLIT_SIZES = {"train": 30, "val": 40, "test": 60}
FAMILIES = {**dict.fromkeys(ENCODERS, "expert"), "logitprod": "fuser", "shazam": "fuser", "oracle_expert": "oracle"}
#: Dirichlet concentration added to every expert's 1…3 of a gate stuck at its uniform start.
STUCK_GATE = 100.0
#: The report tests' run: three tasks, three experts, four fusion methods. ``shazam`` is missing on
#: surv_brca (a failed method), mut_tp53 was never evaluated (a skipped task): 8 missing cells of 21;
#: LogitProd's gate learned on brca_idc_ilc and stayed uniform on surv_brca (early stopping kept epoch 0).
REPORT_METHODS = ["logitprod", "shazam", "best_val_expert", "mean_logits"]
REPORT_TASKS = ["brca_idc_ilc", "surv_brca", "mut_tp53"]


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
                          gates: int | None = None, gate_base: float = 0.0) -> pd.DataFrame:
    """Rows in the ``predictions`` shape whose logits carry ``strength`` × the true signal.

    Patients are the same for every method of a task (seeded by the task only), each patient in
    the test split of exactly one fold, as in k-fold cross-validation. Gate weights favour the last
    expert; ``gate_base`` (:data:`STUCK_GATE`) keeps them close to uniform.
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
                weights = _gates(noise, n, gates, len(ENCODERS), gate_base)
                frame["gate_weights"] = pd.Series(weights, index=frame.index)
            else:
                frame["gate_weights"] = None
            frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _gates(rng: np.random.Generator, n: int, width: int, n_experts: int, base: float) -> list[np.ndarray]:
    """Per-sample gate weights, bin-major: each group of ``n_experts`` sums to 1."""
    groups = rng.dirichlet(base + np.linspace(1, 3, n_experts), size=(n, width // n_experts))
    return list(groups.reshape(n, width).astype(np.float32))


def write_predictions(cfg: Config, task: str, method: str, family: str, strength: float, seed: int,
                      encoders: list[str] | None = None, seconds: float = 1.0, stuck_gate: bool = False) -> Path:
    """Write one method's synthetic predictions where the layout expects them.

    Fold metadata as the real stages write it: experts' inner-fold seconds; LogitProd uses them and
    records its gate's movement on the test samples (a ``stuck_gate`` stays near uniform and early
    stopping kept its first epoch).
    """
    spec = cfg.task(task)
    folds = spec.n_folds
    gates = None
    if method == "logitprod":
        gates = len(encoders or ENCODERS) * ((spec.n_bins + 1) if spec.kind == "survival" else 1)
    df = synthetic_predictions(spec, strength, seed, folds, gates, STUCK_GATE if stuck_gate else 0.0)
    meta: dict[str, Any] = {
        "task": task, "kind": spec.kind, "method": method, "family": family, "encoders": encoders or ENCODERS,
        "classes": None if spec.kind == "survival" else list(spec.display_classes), "seed": seed,
        "folds": {str(f): {"train_seconds": seconds * (f + 1), "params": int(700 * seconds) + 300, "flops": None,
                           "best_epoch": 0 if stuck_gate else 3, "carve_val": False, "n_train": 30, "n_val": 40,
                           "n_test": 60, **({"inner_seconds": 2.0 * seconds * (f + 1)} if family == "expert" else {}),
                           "uses_inner_experts": method == "logitprod"}
                  for f in range(folds)},
    }
    if family == "expert":  # every expert of a task records the same left-out samples
        meta["dropped"] = {"no bag for demo_vit_b": {"n": 2, "ids": ["S900", "S901"]},
                           "in no split of any fold": {"n": 1, "ids": ["S902"]}}
    if gates:
        for fold, info in meta["folds"].items():
            test = df[(df["fold"] == int(fold)) & (df["split"] == "test")]["gate_weights"]
            info.update(kept_first_epoch=info["best_epoch"] <= 0,
                        **gate_movement(np.stack(test.to_list()), len(encoders or ENCODERS)))
    if spec.kind == "survival":
        meta["n_bins"] = spec.n_bins
        meta["bin_edges"] = {str(f): [0.0, 10.0, 25.0, 60.0, 1e9] for f in range(folds)}
    path = (cfg.layout.expert_predictions(task, method) if family == "expert"
            else cfg.layout.fusion_predictions(task, method))
    return write_parquet(df, path, schema="predictions", meta=meta)


def write_task(cfg: Config, task: str, strengths: dict[str, float], skip: tuple[str, ...] = (),
               stuck_gate: bool = False) -> None:
    """Experts demo_vit_a/b/c and the given fusion methods, with a strength each."""
    for i, (method, strength) in enumerate(strengths.items()):
        if method in skip:
            continue
        family = FAMILIES.get(method, "baseline")
        write_predictions(cfg, task, method, family, strength, seed=100 + i, seconds=1.0 + 9 * (method == "shazam"),
                          stuck_gate=stuck_gate)


def report_run(root: Path) -> Config:
    """The report tests' run (:data:`REPORT_TASKS`), written and evaluated; the report is left to build."""
    cfg = make_config(root, REPORT_TASKS, methods=REPORT_METHODS)
    strengths = {"demo_vit_a": 0.2, "demo_vit_b": 2.0, "demo_vit_c": 0.6, "logitprod": 2.5, "shazam": 1.2,
                 "best_val_expert": 2.0, "mean_logits": 1.0}
    write_task(cfg, "brca_idc_ilc", strengths)
    write_task(cfg, "surv_brca", strengths, skip=("shazam",), stuck_gate=True)
    write_curve(cfg, "brca_idc_ilc", "demo_vit_b")
    for task in ("brca_idc_ilc", "surv_brca"):
        evaluate_task(cfg, task)
    return cfg


def write_curve(cfg: Config, task: str, encoder: str) -> None:
    """A two-epoch training curve (outer and one inner model) as the expert stage writes it."""
    curve = pd.DataFrame({"epoch": [0, 1, 0, 1], "train_loss": [0.7, 0.5, 0.7, 0.6], "val_loss": [0.7, 0.6, 0.7, 0.65],
                          "model": ["outer", "outer", "inner0", "inner0"], "fold": 0})
    write_parquet(curve, cfg.layout.expert_curve(task, encoder), schema="training_curve")

"""Tiny synthetic cohorts in the embedding stage's output format, for the expert-stage tests.

Features are written exactly as the embedding stage writes them (float16 safetensors per slide,
``feature_shard`` manifests, a ``skipped`` list; a tile tensor + ``tile_feature_index``), so the
tests read them through the same code paths a real run uses. Signals are planted in a few tiles
per bag, so a head has to attend to learn them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from pathfuse import resources
from pathfuse.config import Config
from pathfuse.io import write_parquet, write_safetensors
from pathfuse.paths import Layout, shard_name

ENCODER = "demo_vit_a"  # any name of the encoder registry; dims come from the files written here
COHORT = "syn"

TASKS = {
    "tbin": {
        "kind": "wsi_classification",
        "cohort": COHORT,
        "label_column": "label",
        "classes": ["neg", "pos"],
        "split": {"source": "kfold", "n_folds": 3},
        "metrics": ["auroc", "balanced_accuracy", "accuracy"],
        "primary_metric": "auroc",
        "lp22": False,
    },
    "tmulti": {
        "kind": "wsi_classification",
        "cohort": COHORT,
        "label_column": "label",
        "classes": ["a", "b", "c"],
        "split": {"source": "csv", "n_folds": 2},
        "metrics": ["auroc", "macro_f1"],
        "primary_metric": "auroc",
        "lp22": False,
    },
    "tsurv": {
        "kind": "survival",
        "cohort": COHORT,
        "time_column": "survival_months",
        "censorship_column": "censorship",
        "n_bins": 4,
        "split": {"source": "csv", "n_folds": 2},
        "metrics": ["c_index", "ibs"],
        "primary_metric": "c_index",
        "lp22": False,
    },
    "ttile": {
        "kind": "tile_classification",
        "dataset": "syntiles",
        "classes": ["x", "y", "z"],
        "split": {"source": "official"},
        "metrics": ["balanced_accuracy", "auroc"],
        "primary_metric": "balanced_accuracy",
        "lp22": False,
    },
    "tholdout": {
        "kind": "tile_classification",
        "dataset": "syntiles",
        "classes": ["x", "y", "z"],
        "split": {"source": "holdout", "test_fraction": 0.25},
        "metrics": ["balanced_accuracy"],
        "primary_metric": "balanced_accuracy",
        "lp22": False,
    },
}

FAST_RECIPE = {"lr": 5e-3, "batch_size": 8, "dropout": 0.0}


def make_config(
    root: Path,
    tasks: list[str],
    experts: dict | None = None,
    n_shards: int = 2,
    seed: int = 7,
    epochs: int = 6,
) -> Config:
    """A run config over a private task registry, results under ``root/results``."""
    registry = root / "tasks.yaml"
    registry.write_text(yaml.safe_dump(TASKS))
    heads = {kind: {**FAST_RECIPE, "epochs": epochs} for kind in ("wsi_classification", "survival")}
    heads["tile_classification"] = {"epochs": 2 * epochs, "lr": 3e-3, "batch_size": 32}
    settings = {"inner_folds": 3, "val_fraction": 0.25, "heads": heads, **(experts or {})}
    return Config.from_dict(
        {
            "results_dir": str(root / "results"),
            "seed": seed,
            "registries": {"tasks": str(registry), "encoders": str(resources.registry("encoders"))},
            "encoders": [ENCODER],
            "tasks": tasks,
            "cohorts": {COHORT: {"slides": str(root / "slides" / "*.tiff"), "n_shards": n_shards}},
            "tile_datasets": {"syntiles": {"path": str(root / "tiles")}},
            "task_data": {
                "tbin": {"labels": str(root / "labels_bin.csv")},
                "tmulti": {
                    "labels": str(root / "labels_multi.csv"),
                    "splits": str(root / "splits_multi_{fold}.csv"),
                },
                "tsurv": {
                    "labels": str(root / "labels_surv.csv"),
                    "splits": str(root / "splits_surv_{fold}.csv"),
                },
            },
            "experts": settings,
        }
    )


def bag(
    rng: np.random.Generator, n_tiles: int, dim: int, signal: np.ndarray | None, n_signal: int = 4
) -> np.ndarray:
    """Noise tiles; the first ``n_signal`` carry ``signal`` (so pooling must find them)."""
    x = rng.normal(size=(n_tiles, dim)).astype(np.float32)
    if signal is not None:
        x[:n_signal] += signal
    return x


def write_slides(
    layout: Layout,
    slides: dict[str, np.ndarray],
    n_shards: int = 2,
    failed: tuple[str, ...] = (),
    skipped: tuple[str, ...] = (),
) -> None:
    """Write per-slide features, shard manifests (``failed`` get status error) and the skip list."""
    ids = sorted([*slides, *failed])
    for shard, chunk in enumerate(np.array_split(np.array(ids, dtype=object), n_shards)):
        rows = []
        for slide in chunk:
            path = layout.features(ENCODER, COHORT, slide)
            if slide in failed:
                rows.append(
                    {
                        "slide_id": slide,
                        "status": "error",
                        "reason": "corrupt",
                        "n_tiles": 0,
                        "dim": 0,
                        "features_path": "",
                    }
                )
                continue
            feats = slides[slide]
            write_safetensors(
                {"features": feats.astype(np.float16), "coords": np.zeros((len(feats), 2), dtype=np.int64)},
                path,
                {"encoder": ENCODER},
            )
            rows.append(
                {
                    "slide_id": slide,
                    "status": "ok",
                    "reason": "",
                    "n_tiles": len(feats),
                    "dim": feats.shape[1],
                    "features_path": str(path),
                }
            )
        write_parquet(
            pd.DataFrame(rows, columns=["slide_id", "status", "reason", "n_tiles", "dim", "features_path"]),
            layout.feature_shard(ENCODER, COHORT, shard_name(shard)),
            schema="feature_shard",
        )
    write_parquet(
        pd.DataFrame(
            {
                "slide_id": list(skipped),
                "path": "",
                "status": "skipped",
                "reason": "no tissue",
                "n_tiles": 0,
                "tiles_path": "",
            }
        ),
        layout.tile_skipped(COHORT),
        schema="skipped",
    )


def classification_cohort(
    root: Path,
    classes: tuple[str, ...] = ("neg", "pos"),
    n_patients: int = 48,
    dim: int = 16,
    n_tiles: int = 20,
    seed: int = 0,
    slides_per_patient: int = 1,
) -> pd.DataFrame:
    """Slides whose class is planted in 4 tiles; returns the label table (slide_id, case_id, label)."""
    rng = np.random.default_rng(seed)
    n_classes = len(classes)
    directions = 3.0 * np.eye(dim, dtype=np.float32)[:n_classes]
    rows, slides = [], {}
    for p in range(n_patients):
        label = p % n_classes
        for s in range(slides_per_patient):
            slide = f"S{p:03d}_{s}"
            slides[slide] = bag(rng, n_tiles + int(rng.integers(0, 10)), dim, directions[label])
            rows.append({"slide_id": slide, "case_id": f"P{p:03d}", "label": classes[label]})
    write_slides(Layout(root / "results"), slides)
    return pd.DataFrame(rows)


def survival_cohort(
    root: Path, n_patients: int = 60, dim: int = 16, n_tiles: int = 20, seed: int = 0
) -> pd.DataFrame:
    """Slides whose risk is planted in 4 tiles; label table in the TCGA survival format."""
    rng = np.random.default_rng(seed)
    direction = np.eye(dim, dtype=np.float32)[0]
    rows, slides = [], {}
    for p in range(n_patients):
        risk = rng.normal()
        slide = f"S{p:03d}_0"
        slides[slide] = bag(rng, n_tiles, dim, 3.0 * risk * direction)
        time = float(np.exp(-risk) * 20 * rng.uniform(0.8, 1.2))
        censored = int(rng.uniform() < 0.3)
        rows.append(
            {
                "case_id": f"P{p:03d}",
                "slide_id": slide,
                "survival_months": round(time, 3),
                "censorship": censored,
            }
        )
    write_slides(Layout(root / "results"), slides)
    return pd.DataFrame(rows)


def write_split_files(
    root: Path, name: str, table: pd.DataFrame, n_folds: int, val_equals_test: bool = False
) -> None:
    """Published-style split CSVs (ragged train,val,test columns of case ids)."""
    cases = np.array(sorted(table["case_id"].unique()))
    for k in range(n_folds):
        test = cases[k::n_folds]
        rest = np.setdiff1d(cases, test)
        val = test if val_equals_test else rest[: max(2, len(rest) // 6)]
        train = np.setdiff1d(rest, val)
        cols = {"train": list(train), "val": list(val), "test": list(test)}
        n = max(map(len, cols.values()))
        pd.DataFrame({c: v + [""] * (n - len(v)) for c, v in cols.items()}).to_csv(
            root / f"splits_{name}_{k}.csv", index=False
        )


def tile_dataset(root: Path, n: int = 240, dim: int = 12, n_classes: int = 3, seed: int = 0) -> pd.DataFrame:
    """A tile dataset whose classes are linearly separable; 60/15/25 official split."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % n_classes
    feats = rng.normal(size=(n, dim)).astype(np.float32) + 2.5 * np.eye(dim, dtype=np.float32)[labels]
    layout = Layout(root / "results")
    order = rng.permutation(n)  # rows of the tensor are not in sample order
    tensor = np.empty_like(feats)
    tensor[order] = feats
    write_safetensors({"features": tensor.astype(np.float16)}, layout.tile_features(ENCODER, "syntiles"), {})
    split = np.where(np.arange(n) < 0.6 * n, "train", np.where(np.arange(n) < 0.75 * n, "val", "test"))
    index = pd.DataFrame(
        {
            "row": order.astype(np.int64),
            "sample_id": [f"T{i:04d}" for i in range(n)],
            "label": np.array(["x", "y", "z"])[labels],
            "split": split,
            "group": [f"G{i // 2:04d}" for i in range(n)],
        }
    )
    write_parquet(index, layout.tile_feature_index(ENCODER, "syntiles"), schema="tile_feature_index")
    return index


def feature_paths(root: Path, slides: list[str]) -> dict[str, Path]:
    """Each slide's features file, as :func:`write_slides` writes it under ``root/results``."""
    layout = Layout(root / "results")
    return {s: layout.features(ENCODER, COHORT, s) for s in slides}

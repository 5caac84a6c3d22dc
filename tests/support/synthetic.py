"""Synthetic fusion inputs: expert predictions and teacher features with known structure.

The fusion tests and ``benchmarks/fusion_cost.py`` need tasks of every kind whose experts
have controlled quality (one clearly best, complementary pairs, pure noise) and teachers whose
features carry a controlled signal, at sizes from a few dozen samples to thousands. This
module writes such a task in the exact on-disk contract (predictions files, per-slide
safetensors bags with their shard manifest and label table, or a tile-feature tensor with its
index) and returns the :class:`~pathfuse.config.Config` that points at it, so that tests and
benchmarks run the real stage code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from pathfuse import resources
from pathfuse.config import Config, load_yaml
from pathfuse.encoders.levels import LEVELS_KEY
from pathfuse.heads.losses import time_bins
from pathfuse.io import write_parquet, write_safetensors
from pathfuse.paths import shard_name

COHORT, DATASET = "synthetic", "synthetic_tiles"
#: One registry task of each kind; the synthetic data takes their classes and label columns.
TASK_OF_KIND = {"wsi_classification": "bracs_3", "mutation": "mut_tp53", "survival": "surv_brca",
                "tile_classification": "ccrcc_tissue"}


@dataclass(frozen=True)
class SyntheticTask:
    """What to generate.

    Attributes:
        task: a task id of config/tasks.yaml (its kind, classes and columns are used).
        n_samples: samples (slides or tiles); one patient each.
        n_folds: outer folds (test = one chunk per fold; val = 20% of the rest).
        quality: per expert, the strength of the label signal in its logits (0 = noise).
        feature_signal: per teacher, the strength of the label signal in its features
            (default: ``quality``); ``dims`` gives each teacher's feature width (default
            16, 24, 32, …).
        tiles_per_slide: bag size of slide tasks (half the tiles carry the signal).
        embed_dim: width of the experts' recorded slide embeddings (slide tasks).
        oof: write out-of-fold rows for the training samples.
        seed: everything drawn from it.
    """

    task: str
    n_samples: int = 60
    n_folds: int = 3
    quality: tuple[float, ...] = (2.0, 1.0, 0.0)
    feature_signal: tuple[float, ...] | None = None
    dims: tuple[int, ...] | None = None
    tiles_per_slide: int = 8
    embed_dim: int = 16
    oof: bool = True
    levels: bool = False  # tile tasks: also write level features (low, mid) as shazam_levels reads them
    seed: int = 0

    @property
    def encoders(self) -> list[str]:
        return [f"teacher{m}" for m in range(len(self.quality))]

    @property
    def feature_dims(self) -> tuple[int, ...]:
        return self.dims or tuple(16 + 8 * m for m in range(len(self.quality)))


def write_synthetic_task(root: Path, spec: SyntheticTask, fusion: dict[str, Any] | None = None,
                         with_features: bool = True) -> Config:
    """Write a synthetic task under ``root`` and return the run config that reads it."""
    root = Path(root)
    cfg = _config(root, spec, fusion or {})
    task = cfg.task(spec.task)
    rng = np.random.default_rng(spec.seed)
    n = spec.n_samples
    survival = task.kind == "survival"
    n_out = task.n_bins if survival else len(task.classes)
    latent_dim = 8
    if survival:
        risk = rng.normal(size=n)
        time = np.exp(-risk + 0.3 * rng.normal(size=n)) * 30.0
        event = (rng.random(n) < 0.7).astype(np.int8)
        time = np.where(event == 1, time, time * rng.uniform(0.3, 1.0, size=n))
        label = np.full(n, -1, dtype=np.int64)
        latent = risk[:, None] * rng.normal(size=(1, latent_dim))
    else:
        label = np.arange(n) % n_out
        rng.shuffle(label)
        time, event = np.full(n, np.nan), np.full(n, -1, dtype=np.int8)
        latent = rng.normal(size=(n_out, latent_dim))[label]
    ids = np.array([f"s{i:05d}" for i in range(n)])
    folds = _folds(rng, n, spec.n_folds)
    frames = {enc: [] for enc in spec.encoders}
    edges = {}
    for k, parts in enumerate(folds):
        if survival:
            edges[k] = time_bins(time[parts["train"]], event[parts["train"]], task.n_bins).tolist()
        for enc, q in zip(spec.encoders, spec.quality, strict=True):
            for split, oof in (("train", False), ("train", True), ("val", False), ("test", False)):
                if oof and not spec.oof:
                    continue
                idx = parts[split]
                strength = q * (0.8 if oof else 1.0)
                if survival:
                    logits = (strength * risk[idx, None] + np.linspace(-2.0, 0.0, n_out)
                              + 0.5 * rng.normal(size=(len(idx), n_out)))
                else:
                    logits = 3.0 * strength * np.eye(n_out)[label[idx]] + rng.normal(size=(len(idx), n_out))
                emb = (latent[idx] @ rng.normal(size=(latent_dim, spec.embed_dim)) * q
                       + rng.normal(size=(len(idx), spec.embed_dim))) if task.is_slide_task else None
                frames[enc].append(pd.DataFrame({
                    "fold": np.int32(k), "split": split, "oof": oof, "sample_id": ids[idx], "patient_id": ids[idx],
                    "label": label[idx], "time": time[idx], "event": event[idx],
                    "logits": list(logits.astype(np.float32)),
                    "embedding": list(emb.astype(np.float32)) if emb is not None else None,
                    "gate_weights": None,
                }))
    for enc in spec.encoders:
        meta = {"task": spec.task, "kind": task.kind, "method": enc, "family": "expert", "encoders": [enc],
                "classes": None if survival else task.display_classes, "seed": spec.seed, "dropped": [],
                "folds": {str(k): {"carve_val": False} for k in range(len(folds))}}
        if survival:
            meta.update(n_bins=task.n_bins, bin_edges={str(k): e for k, e in edges.items()})
        write_parquet(pd.concat(frames[enc], ignore_index=True), cfg.layout.expert_predictions(spec.task, enc),
                      schema="predictions", meta=meta)
    if with_features:
        signal = spec.feature_signal or spec.quality
        if task.is_slide_task:
            _write_bags(cfg, root, spec, task, ids, latent, label, time, event, signal, rng)
        else:
            _write_tiles(cfg, spec, task, ids, latent, label, signal, rng)
    return cfg


def _config(root: Path, spec: SyntheticTask, fusion: dict[str, Any]) -> Config:
    registry = root / "encoders.yaml"
    registry.parent.mkdir(parents=True, exist_ok=True)
    entries = {e: {"kind": "byo", "dim": d} for e, d in zip(spec.encoders, spec.feature_dims, strict=True)}
    registry.write_text(yaml.safe_dump(entries))
    kind = load_yaml(resources.registry("tasks"))[spec.task]["kind"]
    if kind == "tile_classification":
        data = {"dataset": DATASET}
    else:
        data = {"cohort": COHORT, "labels": str(root / "labels.csv"), "splits": str(root / "splits_{fold}.csv"),
                "n_folds": spec.n_folds}
    return Config.from_dict({
        "results_dir": str(root / "results"), "seed": spec.seed,
        "registries": {"tasks": str(resources.registry("tasks")), "encoders": str(registry)},
        "encoders": spec.encoders, "tasks": [spec.task],
        "cohorts": {COHORT: {"slides": str(root / "slides" / "*.svs"), "n_shards": 1}},
        "tile_datasets": {DATASET: {"path": str(root / "tiles"), "format": "features"}},
        "task_data": {spec.task: data}, "fusion": fusion,
    })


def _folds(rng: np.random.Generator, n: int, n_folds: int) -> list[dict[str, np.ndarray]]:
    order = rng.permutation(n)
    chunks = np.array_split(order, n_folds) if n_folds > 1 else [order[: n // 5]]
    out = []
    for chunk in chunks:
        rest = np.setdiff1d(order, chunk)
        rest = rng.permutation(rest)
        n_val = max(2, len(rest) // 5)
        out.append({"test": np.sort(chunk), "val": np.sort(rest[:n_val]), "train": np.sort(rest[n_val:])})
    return out


def _teacher_feature(
    rng: np.random.Generator, latent: np.ndarray, strength: float, projection: np.ndarray
) -> np.ndarray:
    return (strength * latent @ projection + rng.normal(size=(len(latent), projection.shape[1]))).astype(np.float16)


def _write_bags(cfg: Config, root: Path, spec: SyntheticTask, task: Any, ids: np.ndarray, latent: np.ndarray,
                label: np.ndarray, time: np.ndarray, event: np.ndarray, signal: tuple[float, ...],
                rng: np.random.Generator) -> None:
    t = spec.tiles_per_slide
    informative = rng.random((len(ids), t)) < 0.5
    tile_latent = np.where(informative[..., None], latent[:, None, :], 0.0)
    for enc, dim, s in zip(spec.encoders, spec.feature_dims, signal, strict=True):
        projection = rng.normal(size=(latent.shape[1], dim)) / np.sqrt(latent.shape[1])
        rows = []
        for i, slide in enumerate(ids):
            path = cfg.layout.features(enc, COHORT, slide)
            feats = _teacher_feature(rng, tile_latent[i], s, projection)
            coords = np.stack([np.arange(t) * 256, np.zeros(t)], axis=1).astype(np.int64)
            write_safetensors({"features": feats, "coords": coords}, path, {"encoder": enc})
            rows.append({"slide_id": slide, "status": "ok", "reason": "", "n_tiles": t, "dim": dim,
                         "features_path": str(path)})
        write_parquet(pd.DataFrame(rows), cfg.layout.feature_shard(enc, COHORT, shard_name(0)), schema="feature_shard")
    table = pd.DataFrame({"slide_id": ids, "case_id": ids})
    if task.kind == "survival":
        table[task.time_column] = time
        table[task.censorship_column] = 1 - event
    else:
        table[task.label_column] = [task.classes[y] for y in label]
    table.to_csv(root / "labels.csv", index=False)


def _write_tiles(cfg: Config, spec: SyntheticTask, task: Any, ids: np.ndarray, latent: np.ndarray,
                 label: np.ndarray, signal: tuple[float, ...], rng: np.random.Generator) -> None:
    index = pd.DataFrame({"row": np.arange(len(ids), dtype=np.int64), "sample_id": ids,
                          "label": [str(task.classes[y]) for y in label], "split": "", "group": ids})
    for enc, dim, s in zip(spec.encoders, spec.feature_dims, signal, strict=True):
        projection = rng.normal(size=(latent.shape[1], dim)) / np.sqrt(latent.shape[1])
        tensors = {"features": _teacher_feature(rng, latent, s, projection)}
        if spec.levels:  # a generator of their own: the draws of every other test stay as they were
            own = np.random.default_rng([spec.seed, dim])
            tensors[LEVELS_KEY] = np.stack([_teacher_feature(own, latent, s * k / 3, projection)
                                            for k in (1, 2)], axis=1)
        write_safetensors(tensors, cfg.layout.tile_features(enc, DATASET), {"encoder": enc})
        write_parquet(index, cfg.layout.tile_feature_index(enc, DATASET), schema="tile_feature_index")


def fast_fusion_settings() -> dict[str, Any]:
    """A ``fusion`` config section with tiny models and schedules, for tests and smoke runs."""
    schedule = {"lr": 0.05, "max_epochs": 30, "patience": 10}
    return {
        "logitprod": {"by_kind": {kind: dict(schedule) for kind in TASK_OF_KIND}},
        "shazam": {"dim": 16, "n_layers": 2, "abmil_hidden": 16, "max_epochs": 3, "patience": 2, "max_tiles": 6},
        "concat": {"max_epochs_classification": 3, "max_epochs_survival": 3, "max_epochs_tile": 3, "max_tiles": 6},
        "stacking": {"max_iter": 200},
    }

"""Stage entry: train one encoder's expert head on one task, all folds (rule ``expert``).

Per outer fold the head is trained on the fold's training samples with checkpoint choice on
its validation samples (METHODS.md §2), then predicts train (in-sample), val and test. An
inner patient-level k-fold on the training samples gives out-of-fold logits (``oof=True``
rows): LogitProd needs logits of training samples from models that never saw them, to
estimate the experts' error correlation and to train its gate on unbiased inputs. Inner
models stop on the outer validation set, which none of them trains on.

Outputs (docs/architecture.md): ``predictions.parquet`` (schema ``predictions``), per fold
``fold{k}.safetensors`` (weights of the outer model), ``training_curve.parquet`` (the
report plots it) and ``attention.parquet`` (each test tile's attention, :mod:`pathfuse.attention`). A finished fold is kept as a hidden partial file, so a killed job
resumes at the next fold; the partial files are removed once ``predictions.parquet`` exists.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from pathfuse.attention import attention_frame, empty_frame, write_attention
from pathfuse.config import Config, TaskSpec
from pathfuse.data.bags import BagDataset, BagStore, cohort_feature_paths, collate_bags
from pathfuse.data.labels import PATIENTS_KEY, load_samples
from pathfuse.data.splits import Fold, make_folds, patient_kfold
from pathfuse.data.tiles import TileDataset, collate_tiles, load_tile_features
from pathfuse.heads import build_head
from pathfuse.heads.losses import balanced_class_weights, time_bins
from pathfuse.heads.objectives import Objective, monitor_fn
from pathfuse.io import (
    SCHEMA_VERSIONS,
    read_parquet,
    remove_stale_temporaries,
    write_parquet,
    write_safetensors,
)
from pathfuse.plan import Planner, inner_folds_needed
from pathfuse.seeds import replicate_parts, replicate_payload
from pathfuse.training import FitResult, count_parameters, derive_seed, fit, make_loader, to_device

log = logging.getLogger(__name__)


class FoldError(ValueError):
    """A fold cannot train (a class absent from training, no event); names task, fold, samples."""


# ----------------------------------------------------------------------------- contract rows
def prediction_frame(
    *,
    fold: int,
    split: str,
    oof: bool,
    sample_ids: Sequence[str],
    patient_ids: Sequence[str],
    labels: Sequence[int],
    times: Sequence[float],
    events: Sequence[int],
    logits: np.ndarray,
    embeddings: np.ndarray | None = None,
    gate_weights: np.ndarray | None = None,
) -> pd.DataFrame:
    """Rows of the ``predictions`` contract with exact column types (also used by the fusers)."""
    n = len(sample_ids)

    def lists(values: np.ndarray | None) -> list[np.ndarray | None]:
        # float32 arrays become Arrow list<float>; a column of None is stored as null.
        return [None] * n if values is None else [np.asarray(v, dtype=np.float32) for v in values]

    return pd.DataFrame(
        {
            "fold": np.full(n, fold, dtype=np.int32),
            "split": [split] * n,
            "oof": np.full(n, oof, dtype=bool),
            "sample_id": pd.Series(sample_ids, dtype=str).to_numpy(),
            "patient_id": pd.Series(patient_ids, dtype=str).to_numpy(),
            "label": np.asarray(labels, dtype=np.int64),
            "time": np.asarray(times, dtype=np.float64),
            "event": np.asarray(events, dtype=np.int8),
            "logits": lists(logits),
            "embedding": lists(embeddings),
            "gate_weights": lists(gate_weights),
        }
    )


# ----------------------------------------------------------------------------- stage entry
def train_experts(cfg: Config, task: str, encoder: str, seed: int = 0) -> Path:
    """Train and predict every fold of (``task``, ``encoder``); return the predictions path.

    ``seed`` > 0 is a replicate (``experts.n_seeds``): the same folds trained from another
    training seed, written under ``results/seeds/seed{seed}/`` (:mod:`pathfuse.seeds`).
    """
    job = _Job.create(cfg, task, encoder, seed)
    if removed := remove_stale_temporaries(job.out_dir):
        log.info("removed %d temporary file(s) a killed run left in %s", removed, job.out_dir)
    log.info(
        "task %s, encoder %s%s: %d samples, %d fold(s), head %s on %s",
        task,
        encoder,
        f" (seed {seed})" if seed else "",
        len(job.samples),
        len(job.folds),
        job.recipe["head"],
        job.device,
    )
    results, skipped = [], {}
    for fold in job.folds:
        try:
            results.append(job.run_fold(fold))
        except FoldError as err:
            if job.settings["on_bad_input"] != "skip":
                raise
            log.warning("%s — fold skipped (experts.on_bad_input: skip)", err)
            skipped[str(fold.index)] = str(err)
    if not results:
        raise FoldError(f"task {task}, encoder {encoder}: every fold was skipped: {skipped}")
    out = job.write_outputs(results, skipped)
    for fold in job.folds:
        job.partial_path(fold.index).unlink(missing_ok=True)
        job.partial_attention_path(fold.index).unlink(missing_ok=True)
    return out


@dataclass
class _FoldResult:
    fold: int
    rows: pd.DataFrame
    info: dict[str, Any]
    curve: pd.DataFrame
    bin_edges: list[float] | None
    attention: pd.DataFrame


@dataclass
class _Job:
    """Everything one (task, encoder) job needs, loaded once."""

    cfg: Config
    spec: TaskSpec
    encoder: str
    settings: dict[str, Any]
    recipe: dict[str, Any]
    samples: pd.DataFrame
    folds: list[Fold]
    dataset: Callable[[pd.DataFrame, dict[str, np.ndarray], bool, int], Dataset]
    collate: Callable[[list[Any]], dict[str, Any]]
    in_dim: int
    bag_tiles: Callable[[pd.DataFrame], float]
    device: str
    inputs: list[Path]
    store: BagStore | None = None
    replicate: int = 0  # the training seed's index (0: the default run's seeds and paths)

    @classmethod
    def create(cls, cfg: Config, task: str, encoder: str, replicate: int = 0) -> _Job:
        spec = cfg.task(task)
        settings = cfg.section("experts")
        samples = load_samples(cfg, spec, encoder)
        folds = make_folds(cfg, spec, samples)
        if settings["torch_threads"]:
            torch.set_num_threads(int(settings["torch_threads"]))
        device = settings["device"]
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        common = {
            "cfg": cfg,
            "spec": spec,
            "encoder": encoder,
            "settings": settings,
            "recipe": dict(settings["heads"][spec.kind]),
            "samples": samples,
            "folds": folds,
            "device": device,
            "inputs": _input_files(cfg, spec, encoder),
            "replicate": replicate,
        }
        if spec.is_slide_task:
            store = BagStore(cohort_feature_paths(cfg, encoder, spec.cohort or "")[0])
            max_tiles = settings["max_tiles_per_bag"]

            def bag_dataset(
                df: pd.DataFrame, targets: dict[str, np.ndarray], train: bool, seed: int
            ) -> Dataset:
                return BagDataset(
                    store, df["slide_ids"].tolist(), targets, max_tiles if train else None, seed
                )

            def bag_tiles(df: pd.DataFrame) -> float:
                return float(np.mean([sum(store.shape(s)[0] for s in ids) for ids in df["slide_ids"]]))

            return cls(
                **common,
                dataset=bag_dataset,
                collate=collate_bags,
                in_dim=store.shape(samples["slide_ids"].iloc[0][0])[1],
                bag_tiles=bag_tiles,
                store=store,
            )
        tiles = load_tile_features(cfg, spec, encoder)

        def tile_dataset(df: pd.DataFrame, targets: dict[str, np.ndarray], train: bool, seed: int) -> Dataset:
            return TileDataset(tiles.features, df["row"].to_numpy(), targets)

        return cls(
            **common,
            dataset=tile_dataset,
            collate=collate_tiles,
            in_dim=int(tiles.features.shape[1]),
            bag_tiles=lambda df: 1.0,
        )

    # -- paths and resume
    @property
    def out_dir(self) -> Path:
        return self.cfg.layout.expert_dir(self.spec.id, self.encoder, self.replicate)

    def partial_path(self, k: int) -> Path:
        return self.out_dir / f".fold{k}.partial.parquet"

    def partial_attention_path(self, k: int) -> Path:
        return self.out_dir / f".fold{k}.attention.partial.parquet"

    def weights_path(self, k: int) -> Path:
        return self.out_dir / f"fold{k}.safetensors"

    def fingerprint(self, fold: Fold) -> str:
        """Hash of everything that determines a fold's result; a changed setting retrains it."""
        payload = {
            "settings": Planner(self.cfg).expert(self.spec.id, self.encoder, self.replicate).digest,
            "fold": [fold.train, fold.val, fold.test],
            "inner_folds_used": inner_folds_needed(self.cfg),
            "schema": SCHEMA_VERSIONS["predictions"],
            "in_dim": self.in_dim,
            "inputs": {str(p): p.stat().st_mtime_ns for p in self.inputs if p.exists()},
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()

    # -- one fold
    def run_fold(self, fold: Fold) -> _FoldResult:
        """Train (or resume) one outer fold with its inner out-of-fold models."""
        fingerprint = self.fingerprint(fold)
        partial = self.partial_path(fold.index)
        attention_partial = self.partial_attention_path(fold.index)
        if partial.exists() and attention_partial.exists() and self.weights_path(fold.index).exists():
            rows, meta = read_parquet(partial, schema="predictions")
            if meta.get("fingerprint") == fingerprint:
                log.info("fold %d: finished earlier, reusing %s", fold.index, partial)
                attention, _ = read_parquet(attention_partial, schema="attention")
                return _FoldResult(
                    fold.index, rows, meta["info"], pd.DataFrame(meta["curve"]), meta["bin_edges"], attention
                )
        by_id = self.samples.set_index("sample_id", drop=False)
        train, val, test = (by_id.loc[list(ids)] for ids in (fold.train, fold.val, fold.test))
        edges = self._check_fold(fold, train)
        objective = Objective(self.spec.kind, edges)
        # The training seed; a replicate changes only this (and the inner models' seeds derived from
        # it), never the inner partition below, so replicates differ by training randomness alone.
        seed = derive_seed(self.cfg.seed, self.spec.id, self.encoder, fold.index,
                           *replicate_parts(self.replicate))
        model, result = self._fit(train, val, objective, seed)
        rows = [
            self._predict(model, df, objective, fold.index, split, oof=False)
            for split, df in (("train", train), ("val", val), ("test", test))
        ]
        attention = self._attention(model, test, fold.index)
        curves = [result.curve.assign(model="outer")]
        inner_seconds = 0.0
        n_inner = inner_folds_needed(self.cfg)
        partitions = (
            patient_kfold(train, n_inner, derive_seed(self.cfg.seed, self.spec.id, "inner", fold.index))
            if n_inner
            else []
        )
        for j, (fit_ids, held_ids) in enumerate(partitions):
            inner_model, inner = self._fit(
                by_id.loc[list(fit_ids)], val, objective, derive_seed(seed, "inner", j)
            )
            rows.append(
                self._predict(
                    inner_model, by_id.loc[list(held_ids)], objective, fold.index, "train", oof=True
                )
            )
            curves.append(inner.curve.assign(model=f"inner{j}"))
            inner_seconds += inner.seconds
        info = {
            "train_seconds": result.seconds,
            "inner_seconds": inner_seconds,
            "params": count_parameters(model),
            "flops": int(model.flops(round(self.bag_tiles(train)))) if hasattr(model, "flops") else None,
            "best_epoch": result.best_epoch,
            "monitor": result.monitor,
            "best_value": result.best_value,
            "carve_val": fold.carve_val,
            "split_source": fold.source,
            "n_train": len(train),
            "n_val": len(val),
            "n_test": len(test),
        }
        curve = pd.concat(curves, ignore_index=True).assign(fold=fold.index)
        bin_edges = None if edges is None else [float(e) for e in edges]
        write_attention([attention], self.partial_attention_path(fold.index), {"fold": fold.index})
        self._save_fold(
            fold.index, model, info, pd.concat(rows, ignore_index=True), curve, bin_edges, fingerprint
        )
        return _FoldResult(fold.index, pd.concat(rows, ignore_index=True), info, curve, bin_edges, attention)

    def _check_fold(self, fold: Fold, train: pd.DataFrame) -> np.ndarray | None:
        """Refuse folds a head cannot learn from; return survival bin edges of the training split."""
        where = f"task {self.spec.id}, encoder {self.encoder}, fold {fold.index}"
        if self.spec.kind == "survival":
            if int(train["event"].sum()) == 0:
                raise FoldError(
                    f"{where}: no observed event among the {len(train)} training samples "
                    f"({fold.source}); survival bins and the likelihood need events"
                )
            return time_bins(train["time"].to_numpy(), train["event"].to_numpy(), self.spec.n_bins)
        absent = sorted(set(range(len(self.spec.classes))) - set(train["label"].tolist()))
        if absent:
            names = [self.spec.display_classes[i] for i in absent]
            raise FoldError(
                f"{where}: class(es) {names} have no training sample ({fold.source}; training "
                f"samples e.g. {list(train['sample_id'][:5])}); fix the split or the classes"
            )
        return None

    def _fit(
        self, train: pd.DataFrame, val: pd.DataFrame, objective: Objective, seed: int
    ) -> tuple[torch.nn.Module, FitResult]:
        recipe = self.recipe
        torch.manual_seed(seed)
        kwargs = {"dropout": recipe["dropout"]}
        model = build_head(recipe["head"], self.in_dim, self.spec.n_outputs, **kwargs)
        weights = None
        if recipe.get("class_weights") == "balanced":
            weights = balanced_class_weights(train["label"].to_numpy(), len(self.spec.classes)).to(
                self.device
            )
        loss_fn = objective.loss(recipe.get("alpha", 0.4), weights)
        make = self.dataset
        train_loader = make_loader(
            make(train, objective.targets(train), True, seed + 1),
            recipe["batch_size"],
            shuffle=True,
            seed=seed + 2,
            collate_fn=self.collate,
            num_workers=self.settings["num_workers"],
        )
        val_loader = make_loader(
            make(val, objective.targets(val), False, seed),
            recipe["batch_size"],
            shuffle=False,
            collate_fn=self.collate,
            num_workers=self.settings["num_workers"],
        )
        monitor = recipe["monitor"]
        result = fit(
            model,
            train_loader,
            val_loader,
            loss_fn,
            epochs=recipe["epochs"],
            lr=recipe["lr"],
            weight_decay=recipe["weight_decay"],
            patience=recipe["patience"],
            monitor=monitor,
            mode="min" if monitor == "loss" else "max",
            seed=seed,
            metric_fn=None if monitor == "loss" else monitor_fn(monitor),
            device=self.device,
        )
        return model, result

    @torch.no_grad()
    def _predict(
        self, model: torch.nn.Module, df: pd.DataFrame, objective: Objective, fold: int, split: str, oof: bool
    ) -> pd.DataFrame:
        model.eval()
        loader = make_loader(
            self.dataset(df, objective.targets(df), False, 0),
            self.recipe["batch_size"],
            shuffle=False,
            collate_fn=self.collate,
            num_workers=self.settings["num_workers"],
        )
        logits, embeddings = [], []
        for batch in loader:
            inputs = to_device(batch["inputs"], self.device)
            if hasattr(model, "logits_and_embedding"):
                out, emb = model.logits_and_embedding(**inputs)
                embeddings.append(emb.float().cpu().numpy())
            else:
                out = model(**inputs)
            logits.append(out.float().cpu().numpy())
        return prediction_frame(
            fold=fold,
            split=split,
            oof=oof,
            sample_ids=df["sample_id"].tolist(),
            patient_ids=df["patient_id"].tolist(),
            labels=df["label"].to_numpy(),
            times=df["time"].to_numpy(),
            events=df["event"].to_numpy(),
            logits=np.concatenate(logits),
            embeddings=np.concatenate(embeddings) if embeddings else None,
        )

    @torch.no_grad()
    def _attention(self, model: torch.nn.Module, test: pd.DataFrame, fold: int) -> pd.DataFrame:
        """Each test tile's attention under the outer model (slide tasks; one bag at a time, no
        padding, so the values are exactly the softmax the prediction used)."""
        if self.store is None or not hasattr(model, "pool"):
            return empty_frame()
        model.eval()
        frames = []
        for sample_id, slide_ids in zip(test["sample_id"], test["slide_ids"], strict=True):
            bag = self.store.get(list(slide_ids)).to(self.device)
            attention = model.pool(bag)[1][0].float().cpu().numpy()
            lengths = [self.store.shape(s)[0] for s in slide_ids]
            coords = [self.store.coords(s) for s in slide_ids]
            frames.append(attention_frame(fold, sample_id, list(slide_ids), lengths, coords, attention))
        return pd.concat(frames, ignore_index=True) if frames else empty_frame()

    # -- writing
    def _save_fold(
        self,
        k: int,
        model: torch.nn.Module,
        info: dict[str, Any],
        rows: pd.DataFrame,
        curve: pd.DataFrame,
        bin_edges: list[float] | None,
        fingerprint: str,
    ) -> None:
        meta = {
            "task": self.spec.id,
            "encoder": self.encoder,
            "fold": k,
            "head": self.recipe["head"],
            "in_dim": self.in_dim,
            "n_outputs": self.spec.n_outputs,
            "bin_edges": bin_edges,
            **info,
        }
        write_safetensors(model.state_dict(), self.weights_path(k), meta)
        write_parquet(
            rows,
            self.partial_path(k),
            schema="predictions",
            meta={
                "fingerprint": fingerprint,
                "info": info,
                "bin_edges": bin_edges,
                "curve": curve.to_dict(orient="records"),
            },
        )

    def write_outputs(self, results: list[_FoldResult], skipped: dict[str, str]) -> Path:
        """Write predictions (with the contract's metadata) and the training curve (plotted by the report)."""
        survival = self.spec.kind == "survival"
        meta = {
            "task": self.spec.id,
            "kind": self.spec.kind,
            "method": self.encoder,
            "family": "expert",
            "encoders": [self.encoder],
            "classes": None if survival else self.spec.display_classes,
            "n_bins": self.spec.n_bins if survival else None,
            "bin_edges": {str(r.fold): r.bin_edges for r in results} if survival else None,
            "folds": {str(r.fold): r.info for r in results},
            "dropped": self.samples.attrs.get("dropped", {}),
            PATIENTS_KEY: self.samples.attrs.get(PATIENTS_KEY),
            "skipped_folds": skipped,
            "seed": self.cfg.seed,
            **replicate_payload(self.replicate),
            "head": self.recipe["head"],
            "recipe": self.recipe,
            "inner_folds": inner_folds_needed(self.cfg),
            "bag_unit": self.settings["bag_unit"] if self.spec.is_slide_task else None,
        }
        curve = pd.concat([r.curve for r in results], ignore_index=True)
        write_parquet(
            curve,
            self.cfg.layout.expert_curve(self.spec.id, self.encoder, self.replicate),
            schema="training_curve",
            meta={"task": self.spec.id, "encoder": self.encoder},
        )
        write_attention(
            [r.attention for r in results],
            self.cfg.layout.expert_attention(self.spec.id, self.encoder, self.replicate),
            meta={"task": self.spec.id, "encoder": self.encoder, "split": "test", "model": "outer",
                  "bag_unit": meta["bag_unit"]},
        )
        rows = pd.concat([r.rows for r in results], ignore_index=True)
        return write_parquet(
            rows,
            self.cfg.layout.expert_predictions(self.spec.id, self.encoder, self.replicate),
            schema="predictions",
            meta=meta,
        )


def _input_files(cfg: Config, spec: TaskSpec, encoder: str) -> list[Path]:
    """Files whose change invalidates a finished fold: the job plan's inputs (labels, splits, features)."""
    inputs = Planner(cfg).expert(spec.id, encoder).inputs
    if not spec.is_slide_task:  # the per-dataset files behind the tile-feature manifest
        inputs["features"] = [str(cfg.layout.tile_features(encoder, spec.dataset or "")),
                              str(cfg.layout.tile_feature_index(encoder, spec.dataset or ""))]
    return [Path(p) for name in sorted(inputs) for p in inputs[name]]

"""Every fold's trained expert applied to another cohort: its saved weights, checked, then its predictions.

The expert job saves each outer fold's head (``experts/{task}/{encoder}/fold{k}.safetensors``)
with the settings digest it was trained under and the identity of the features it read. A fold
model is used only when both still hold: the run config gives the same expert digest, and the
new cohort's features come from the same encoder weights with the same width. Anything else is
refused with the reason (:class:`ExternalError`), never silently applied.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors import safe_open

from pathfuse.attention import empty_frame
from pathfuse.config import Config, TaskSpec
from pathfuse.data.bags import cohort_feature_paths
from pathfuse.encoders.feature_files import features_identity
from pathfuse.experts.job import Job, _bag_features, recipe_of
from pathfuse.experts.predict import attention_rows, predict_rows
from pathfuse.heads import build_head
from pathfuse.heads.objectives import Objective
from pathfuse.plan import Planner
from pathfuse.reproducibility import choose_device


class ExternalError(ValueError):
    """A trained model cannot be applied to the cohort; the message says which model and why."""


@dataclass
class FoldModel:
    """One outer fold's trained head and the facts its weight file records."""

    fold: int
    model: torch.nn.Module
    bin_edges: list[float] | None
    features: dict[str, Any] | None  # the training features' identity (:func:`features_identity`)


def fold_models(cfg: Config, task: TaskSpec, encoder: str) -> list[FoldModel]:
    """The trained outer-fold heads of (task, encoder), refused unless trained under this config's settings."""
    folder = cfg.layout.expert_dir(task.id, encoder)
    files = sorted(folder.glob("fold*.safetensors"), key=lambda p: int(p.stem[4:]))
    if not files:
        raise ExternalError(f"expert {task.id}/{encoder}: no trained fold model in {folder}; run the expert stage")
    want = Planner(cfg).expert(task.id, encoder).digest
    recipe = recipe_of(cfg.settings.experts, task.kind)
    out = []
    for path in files:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            state = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - safe_open has no __iter__
        recorded = meta.get("settings_digest")
        if recorded != want:
            why = ("it records no settings digest (trained by an older pathfuse)" if recorded is None
                   else f"it was trained under expert settings digest {recorded}, this config gives {want}")
            raise ExternalError(f"refused {path}: {why}; rerun the expert stage under this config, or predict "
                                "with the config the run was trained with")
        model = build_head(meta["head"], int(meta["in_dim"]), int(meta["n_outputs"]), recipe)
        model.load_state_dict(state)
        edges = json.loads(meta["bin_edges"]) if meta.get("bin_edges") not in (None, "null") else None
        out.append(FoldModel(int(meta["fold"]), model.eval(), edges, json.loads(meta.get("features", "null"))))
    return out


def check_features(task: TaskSpec, encoder: str, cohort: str, trained_on: dict[str, Any] | None,
                   external: dict[str, Any]) -> None:
    """Refuse features of another encoder version (weights) or width than the expert was trained on."""
    if trained_on is None:
        raise ExternalError(f"expert {task.id}/{encoder}: its fold models record no feature identity "
                            "(trained by an older pathfuse); rerun the expert stage")
    for key in ("encoder", "weights_sha256", "dim"):
        if trained_on.get(key) != external.get(key):
            raise ExternalError(
                f"expert {task.id}/{encoder} refuses cohort {cohort!r}: its features have {key} "
                f"{external.get(key)!r}, the expert was trained on {trained_on.get(key)!r} (another encoder "
                "version or feature source); embed the cohort with the run's encoder")


def predict_expert(cfg: Config, task: TaskSpec, encoder: str, cohort: str,
                   samples: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every fold model's predictions (``split`` "external") and test-tile attention on ``samples``.

    ``samples`` are rows of :func:`pathfuse.external.samples.external_samples` (labels may be −1/NaN).
    """
    models = fold_models(cfg, task, encoder)
    paths = cohort_feature_paths(cfg, encoder, cohort)[0]
    check_features(task, encoder, cohort, models[0].features,
                   features_identity(paths[samples["slide_ids"].iloc[0][0]]))
    settings = cfg.settings.experts
    device = choose_device(settings.device, "experts.device", torch.cuda.is_available)
    spec = replace(task, cohort=cohort)
    features = _bag_features(cfg, spec, encoder, samples, settings, device)
    job = Job(cfg=cfg, spec=spec, encoder=encoder, settings=settings, recipe=recipe_of(settings, task.kind),
              samples=samples, folds=[], dataset=features.dataset, collate=features.collate, in_dim=features.in_dim,
              bag_tiles=features.bag_tiles, device=device, inputs=[], store=features.store)
    rows, attention = [], []
    for fm in models:
        model = fm.model.to(device)
        edges = None if fm.bin_edges is None else torch.as_tensor(fm.bin_edges).numpy()
        rows.append(predict_rows(job, model, samples, Objective(task.kind, edges), fm.fold, "external", oof=False))
        attention.append(attention_rows(job, model, samples, fm.fold))
    frames = [a for a in attention if len(a)]
    if not frames:
        return pd.concat(rows, ignore_index=True), empty_frame()
    per_fold = pd.concat(frames, ignore_index=True)
    # The fold ensemble's attention (fold −1): each tile's mean weight over the fold models (still sums to 1).
    mean = (per_fold.groupby(["sample_id", "slide_id", "tile"], sort=False)
            .agg(x=("x", "first"), y=("y", "first"), attention=("attention", "mean")).reset_index())
    mean.insert(0, "fold", np.int32(-1))
    mean = mean.astype({"fold": np.int32, "tile": np.int32, "attention": np.float32})
    return pd.concat(rows, ignore_index=True), pd.concat([per_fold, mean[per_fold.columns]], ignore_index=True)


"""Resuming a killed expert job: each finished fold is a hidden partial file with a fingerprint.

A fold is reused only when its partial predictions, partial attention and weights all exist
and the fingerprint of everything that determines its result is unchanged.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
import torch

from pathfuse.data.splits import Fold
from pathfuse.experts.job import FoldResult, Job
from pathfuse.io import SCHEMA_VERSIONS, read_parquet, write_parquet, write_safetensors
from pathfuse.plan import Planner, inner_folds_needed
from pathfuse.reproducibility import json_digest

log = logging.getLogger(__name__)


def fold_fingerprint(job: Job, fold: Fold) -> str:
    """Hash of everything that determines a fold's result; a changed setting retrains it."""
    payload = {
        "settings": Planner(job.cfg).expert(job.spec.id, job.encoder, job.replicate).digest,
        "fold": [fold.train, fold.val, fold.test],
        "inner_folds_used": inner_folds_needed(job.cfg),
        "schema": SCHEMA_VERSIONS["predictions"],
        "in_dim": job.in_dim,
        "inputs": {str(p): p.stat().st_mtime_ns for p in job.inputs if p.exists()},
    }
    return json_digest(payload)


def finished_fold(job: Job, fold: Fold, fingerprint: str) -> FoldResult | None:
    """The fold's result from an earlier run with the same fingerprint, else None."""
    partial = job.partial_path(fold.index)
    attention_partial = job.partial_attention_path(fold.index)
    if partial.exists() and attention_partial.exists() and job.weights_path(fold.index).exists():
        rows, meta = read_parquet(partial, schema="predictions")
        if meta.get("fingerprint") == fingerprint:
            log.info("fold %d: finished earlier, reusing %s", fold.index, partial)
            attention, _ = read_parquet(attention_partial, schema="attention")
            return FoldResult(
                fold.index, rows, meta["info"], pd.DataFrame(meta["curve"]), meta["bin_edges"], attention
            )
    return None


def training_features(job: Job) -> dict[str, Any] | None:
    """Encoder, weights' SHA-256 and width of the features the job trained on (slide tasks; None for tiles)."""
    if job.store is None:
        return None
    from pathfuse.data.bags import cohort_feature_paths
    from pathfuse.encoders.feature_files import features_identity

    paths = cohort_feature_paths(job.cfg, job.encoder, job.spec.cohort or "")[0]
    return features_identity(paths[job.samples["slide_ids"].iloc[0][0]])


def save_fold(
    job: Job,
    k: int,
    model: torch.nn.Module,
    info: dict[str, Any],
    rows: pd.DataFrame,
    curve: pd.DataFrame,
    bin_edges: list[float] | None,
    fingerprint: str,
) -> None:
    """Write the outer model's weights and the fold's partial predictions (with its fingerprint).

    The weights record the expert settings digest and the identity of the features they were
    trained on: what an external cohort or ``pathfuse predict`` checks before applying them.
    """
    meta = {
        "settings_digest": Planner(job.cfg).expert(job.spec.id, job.encoder, job.replicate).digest,
        "features": training_features(job),
        "task": job.spec.id,
        "encoder": job.encoder,
        "fold": k,
        "head": job.recipe.head,
        "in_dim": job.in_dim,
        "n_outputs": job.spec.n_outputs,
        "bin_edges": bin_edges,
        **info,
    }
    write_safetensors(model.state_dict(), job.weights_path(k), meta)
    write_parquet(
        rows,
        job.partial_path(k),
        schema="predictions",
        meta={
            "fingerprint": fingerprint,
            "info": info,
            "bin_edges": bin_edges,
            "curve": curve.to_dict(orient="records"),
        },
    )

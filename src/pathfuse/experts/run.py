"""Stage entry of the ``expert`` rule: every fold of one (task, encoder), then the job's outputs."""

from __future__ import annotations

import logging
import resource
from pathlib import Path

import pandas as pd
import torch

from pathfuse import progress
from pathfuse.attention import write_attention
from pathfuse.config import Config
from pathfuse.data.labels import PATIENTS_KEY
from pathfuse.experts.fold import FoldError, plan_fold, train_folds
from pathfuse.experts.job import FoldResult, Job
from pathfuse.experts.resume import finished_fold, fold_fingerprint
from pathfuse.io import remove_stale_temporaries, write_parquet
from pathfuse.plan import inner_folds_needed
from pathfuse.seeds import replicate_payload

log = logging.getLogger(__name__)


def train_experts(cfg: Config, task: str, encoder: str, seed: int = 0) -> Path:
    """Train and predict every fold of (``task``, ``encoder``); return the predictions path.

    ``seed`` > 0 is a replicate (``experts.n_seeds``): the same folds trained from another
    training seed, written under ``results/seeds/seed{seed}/`` (:mod:`pathfuse.seeds`).
    """
    job = Job.create(cfg, task, encoder, seed)
    if removed := remove_stale_temporaries(job.out_dir):
        log.info("removed %d temporary file(s) a killed run left in %s", removed, job.out_dir)
    log.info(
        "task %s, encoder %s%s: %d samples, %d fold(s), head %s on %s",
        task,
        encoder,
        f" (seed {seed})" if seed else "",
        len(job.samples),
        len(job.folds),
        job.recipe.head,
        job.device,
    )
    results, plans, skipped = [], [], {}
    with progress.scope("job", 1, interval=cfg.settings.logging.progress_interval_s, task=task, encoder=encoder,
                        seed=seed or None) as report:
        for fold in job.folds:
            fingerprint = fold_fingerprint(job, fold)
            if (done := finished_fold(job, fold, fingerprint)) is not None:
                results.append(done)
                continue
            try:
                plans.append(plan_fold(job, fold, fingerprint))
            except FoldError as err:
                if job.settings.on_bad_input != "skip":
                    raise
                log.warning("%s — fold skipped (experts.on_bad_input: skip)", err)
                skipped[str(fold.index)] = str(err)
        report.note(folds=f"{len(plans)} to train, {len(results)} resumed")
        if plans:  # every unfinished fold's heads in one bank: one unit with an epoch per step
            results = sorted(results + train_folds(job, plans), key=lambda r: r.fold)
        report.advance()
    if not results:
        raise FoldError(f"task {task}, encoder {encoder}: every fold was skipped: {skipped}")
    out = write_outputs(job, results, skipped)
    for fold in job.folds:
        job.partial_path(fold.index).unlink(missing_ok=True)
        job.partial_attention_path(fold.index).unlink(missing_ok=True)
    return out


def write_outputs(job: Job, results: list[FoldResult], skipped: dict[str, str]) -> Path:
    """Write predictions (with the contract's metadata) and the training curve (plotted by the report)."""
    spec, cfg, kind = job.spec, job.cfg, job.spec.kind_strategy
    meta = {
        "task": spec.id,
        "kind": spec.kind,
        "method": job.encoder,
        "family": "expert",
        "encoders": [job.encoder],
        "classes": spec.display_classes if kind.has_classes else None,
        "n_bins": spec.n_bins if kind.time_to_event else None,
        "bin_edges": {str(r.fold): r.bin_edges for r in results} if kind.time_to_event else None,
        "folds": {str(r.fold): r.info for r in results},
        "dropped": job.samples.attrs.get("dropped", {}),
        PATIENTS_KEY: job.samples.attrs.get(PATIENTS_KEY),
        "skipped_folds": skipped,
        "seed": cfg.seed,
        **replicate_payload(job.replicate),
        "head": job.recipe.head,
        # The config's own recipe dict: its key order (not the model's field order) keeps the
        # metadata byte-identical to earlier runs.
        "recipe": dict(cfg.raw["experts"]["heads"][spec.kind]),
        "inner_folds": inner_folds_needed(cfg),
        "bag_unit": job.settings.bag_unit if spec.is_slide_task else None,
        "memory": memory_record(job),
    }
    curve = pd.concat([r.curve for r in results], ignore_index=True)
    write_parquet(
        curve,
        cfg.layout.expert_curve(spec.id, job.encoder, job.replicate),
        schema="training_curve",
        meta={"task": spec.id, "encoder": job.encoder},
    )
    write_attention(
        [r.attention for r in results],
        cfg.layout.expert_attention(spec.id, job.encoder, job.replicate),
        meta={"task": spec.id, "encoder": job.encoder, "split": "test", "model": "outer",
              "bag_unit": meta["bag_unit"]},
    )
    rows = pd.concat([r.rows for r in results], ignore_index=True)
    return write_parquet(
        rows,
        cfg.layout.expert_predictions(spec.id, job.encoder, job.replicate),
        schema="predictions",
        meta=meta,
    )


def memory_record(job: Job) -> dict[str, float | bool | None]:
    """Where the bags were and the job's peak memory so far (GiB), logged and kept in the metadata."""
    record: dict[str, float | bool | None] = {
        "features_held": job.held_bytes is not None,
        "features_gib": None if job.held_bytes is None else job.held_bytes / 2**30,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if job.device == "cuda" else None,
    }
    log.info("memory: %s", record)
    return record

"""The experts' predictions of one task, aligned across experts: what every fusion method reads.

Fusers must see exactly the experts' folds and samples (docs/architecture.md). This module
reads each expert's ``predictions`` file, checks that the experts agree on the task, the folds,
the labels and (survival) the time bins, and aligns their rows per (fold, split, oof) block on
``sample_id``. A sample missing from some expert is dropped for every method and recorded in
the metadata, so that fusers and baselines are always compared on the same rows.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pathfuse.config import Config, TaskSpec
from pathfuse.fusion import BlockKey
from pathfuse.fusion.blocks import SPLITS, Block
from pathfuse.fusion.context import FusionContext, FusionInputError
from pathfuse.heads.losses import assign_bins
from pathfuse.io import read_parquet

log = logging.getLogger(__name__)


def load_context(cfg: Config, task_id: str, seed: int = 0) -> FusionContext:
    """Read and align the experts' predictions of ``task_id`` (all of ``task.encoders``).

    ``seed`` > 0 reads that replicate's experts: a replicate's fusers combine experts of the same
    training seed, so its gain measures one whole replicate of the pipeline.
    """
    task = cfg.task(task_id)
    if len(task.encoders) < 1:
        raise FusionInputError(f"task {task_id}: no encoders configured; nothing to fuse")
    frames, metas = {}, {}
    for enc in task.encoders:
        path = cfg.layout.expert_predictions(task_id, enc, seed)
        df, meta = read_parquet(path, schema="predictions")
        _check_meta(path, meta, task)
        frames[enc], metas[enc] = df, meta
    first = task.encoders[0]
    classes = metas[first].get("classes")
    bin_edges = _common_bin_edges(cfg, task, metas) if task.kind_strategy.time_to_event else None
    folds = _common_folds(cfg, task, frames)
    blocks: dict[int, dict[BlockKey, Block]] = {}
    dropped: list[dict[str, Any]] = []
    for fold in folds:
        blocks[fold] = {}
        for key in _block_keys(frames[first], fold):
            block, lost = _align(cfg, task, frames, fold, key, bin_edges)
            blocks[fold][key] = block
            dropped.extend(lost)
    if dropped:
        log.warning("task %s: %d expert row(s) left out of fusion (see the 'dropped' metadata)",
                    task_id, len(dropped))
    for enc, meta in metas.items():  # the experts' own drops: {reason: {"n", "ids"}}
        dropped.extend({"stage": "experts", "encoder": enc, "reason": reason, **entry}
                       for reason, entry in (meta.get("dropped") or {}).items())
    return FusionContext(cfg=cfg, task=task, encoders=list(task.encoders), blocks=blocks,
                         bin_edges=bin_edges, classes=classes, expert_meta=metas[first], dropped=dropped,
                         replicate=seed)


def _check_meta(path: Path, meta: dict[str, Any], task: TaskSpec) -> None:
    if meta.get("kind", task.kind) != task.kind:
        raise FusionInputError(
            f"{path}: written for task kind {meta.get('kind')!r}, but task {task.id} is "
            f"{task.kind!r}; delete the file and re-run the experts stage"
        )


def _common_folds(cfg: Config, task: TaskSpec, frames: dict[str, pd.DataFrame]) -> list[int]:
    folds = {enc: sorted(int(f) for f in df["fold"].unique()) for enc, df in frames.items()}
    reference = next(iter(folds.values()))
    for enc, fs in folds.items():
        if fs != reference:
            raise FusionInputError(
                f"{cfg.layout.expert_predictions(task.id, enc)}: folds {fs} differ from "
                f"{reference} of expert {task.encoders[0]}; re-run the experts stage for task {task.id}"
            )
    if not reference:
        raise FusionInputError(f"task {task.id}: the expert predictions have no rows")
    return reference


def _common_bin_edges(cfg: Config, task: TaskSpec, metas: dict[str, dict[str, Any]]) -> dict[int, list[float]]:
    """Time-to-event kinds: the time bins per fold; every expert must have used the same ones."""
    reference: dict[int, list[float]] | None = None
    for enc, meta in metas.items():
        raw = meta.get("bin_edges")
        if not raw:
            raise FusionInputError(
                f"{cfg.layout.expert_predictions(task.id, enc)}: survival predictions without "
                "'bin_edges' metadata; re-run the experts stage"
            )
        edges = {int(k): [float(x) for x in v] for k, v in raw.items()}
        if reference is None:
            reference = edges
        elif edges.keys() != reference.keys() or any(
            not np.allclose(edges[f], reference[f]) for f in edges
        ):
            raise FusionInputError(
                f"{cfg.layout.expert_predictions(task.id, enc)}: survival bin edges differ from "
                f"those of expert {task.encoders[0]}; the experts must share each fold's bins"
            )
    assert reference is not None
    return reference


def _block_keys(df: pd.DataFrame, fold: int) -> list[BlockKey]:
    rows = df[df["fold"] == fold]
    keys = {(str(s), bool(o)) for s, o in zip(rows["split"], rows["oof"], strict=True)}
    unknown = {s for s, _ in keys} - set(SPLITS)
    if unknown:
        raise FusionInputError(f"fold {fold}: unknown split value(s) {sorted(unknown)}; expected {SPLITS}")
    return sorted(keys, key=lambda k: (SPLITS.index(k[0]), k[1]))


def _align(
    cfg: Config, task: TaskSpec, frames: dict[str, pd.DataFrame], fold: int, key: BlockKey,
    bin_edges: dict[int, list[float]] | None,
) -> tuple[Block, list[dict[str, Any]]]:
    """One block's rows of every expert, in the first expert's order, on shared samples."""
    split, oof = key
    parts = {}
    for enc, df in frames.items():
        rows = df[(df["fold"] == fold) & (df["split"] == split) & (df["oof"] == oof)]
        dup = rows["sample_id"].duplicated()
        if dup.any():
            raise FusionInputError(
                f"{cfg.layout.expert_predictions(task.id, enc)}: sample {rows['sample_id'][dup].iloc[0]!r} "
                f"appears twice in fold {fold} split {split} (oof={oof}); re-run the experts stage"
            )
        parts[enc] = rows.set_index("sample_id")
    first = next(iter(parts.values()))
    shared = [s for s in first.index if all(s in p.index for p in parts.values())]
    lost = [
        {"stage": "fusion", "sample_id": str(s), "fold": fold, "split": split, "oof": oof,
         "reason": "missing from the predictions of expert(s) "
                   + ", ".join(e for e, p in parts.items() if s not in p.index)}
        for s in sorted(set().union(*(set(p.index) for p in parts.values())) - set(shared))
    ]
    aligned = {enc: p.loc[shared] for enc, p in parts.items()}
    ref = aligned[task.encoders[0]]
    for enc, p in aligned.items():
        for col in ("label", "event", "patient_id"):
            if not np.array_equal(p[col].to_numpy(), ref[col].to_numpy()):
                raise FusionInputError(
                    f"{cfg.layout.expert_predictions(task.id, enc)}: column {col!r} disagrees with "
                    f"expert {task.encoders[0]} in fold {fold} split {split}; the experts were "
                    "trained on different label tables; re-run the experts stage"
                )
    logits = np.stack([_stack(p["logits"], enc, task.id) for enc, p in aligned.items()], axis=1)
    bad = ~np.isfinite(logits).all(axis=2) if logits.size else np.zeros((0, 0), dtype=bool)  # [N, M]
    if bad.any():
        m = int(np.flatnonzero(bad.any(axis=0))[0])
        samples = [str(s) for s in np.asarray(shared)[bad[:, m]]]
        raise FusionInputError(
            f"{cfg.layout.expert_predictions(task.id, task.encoders[m])}: non-finite logits (NaN or inf) in fold "
            f"{fold} split {split}{' (out-of-fold)' if oof else ''} for {len(samples)} sample(s): {samples[:10]}; "
            "fix or retrain that expert before fusing"
        )
    embeddings = None
    if all(p["embedding"].notna().all() and len(p) for p in aligned.values()):
        embeddings = [_stack(p["embedding"], enc, task.id) for enc, p in aligned.items()]
    time = ref["time"].to_numpy(dtype=np.float64)
    bins = assign_bins(time, np.asarray(bin_edges[fold])) if bin_edges is not None and len(ref) else None
    block = Block(
        sample_id=np.asarray(shared, dtype=object), patient_id=ref["patient_id"].astype(str).to_numpy(),
        label=ref["label"].to_numpy(dtype=np.int64), time=time, event=ref["event"].to_numpy(dtype=np.int8),
        logits=logits.astype(np.float32), embeddings=embeddings, bin_index=bins,
    )
    return block, lost


def _stack(values: pd.Series, enc: str, task_id: str) -> np.ndarray:
    if not len(values):
        return np.zeros((0, 0), np.float32)
    try:
        return np.stack([np.asarray(v, dtype=np.float32) for v in values])
    except ValueError as err:
        raise FusionInputError(f"task {task_id}, expert {enc}: rows with different vector lengths ({err})") from None

"""An expert's outputs on samples: rows of the ``predictions`` contract and test-tile attention."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch

from pathfuse.attention import attention_frame, empty_frame
from pathfuse.experts.job import Job
from pathfuse.heads.objectives import Objective
from pathfuse.training import make_loader, to_device


def prediction_frame(
    *,
    fold: int,
    split: str,
    oof: bool,
    sample_ids: Sequence[str],
    patient_ids: Sequence[str],
    labels: npt.ArrayLike,
    times: npt.ArrayLike,
    events: npt.ArrayLike,
    logits: np.ndarray,
    embeddings: np.ndarray | None = None,
    gate_weights: np.ndarray | None = None,
) -> pd.DataFrame:
    """Rows of the ``predictions`` contract with exact column types."""
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


@torch.no_grad()
def predict_rows(
    job: Job, model: torch.nn.Module, df: pd.DataFrame, objective: Objective, fold: int, split: str, oof: bool
) -> pd.DataFrame:
    """The model's logits (and embeddings, when the head has them) on ``df`` as contract rows."""
    model.eval()
    loader = make_loader(
        job.dataset(df, objective.targets(df), False, 0),
        job.recipe.batch_size,
        shuffle=False,
        collate_fn=job.collate,
        num_workers=job.settings.num_workers,
    )
    logits, embeddings = [], []
    for batch in loader:
        inputs = to_device(batch["inputs"], job.device)
        # Heads with an embedding (attention MIL) expose it; the others give logits only.
        logits_and_embedding = getattr(model, "logits_and_embedding", None)
        if logits_and_embedding is not None:
            out, emb = logits_and_embedding(**inputs)
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
def attention_rows(job: Job, model: torch.nn.Module, test: pd.DataFrame, fold: int) -> pd.DataFrame:
    """Each test tile's attention under the outer model (slide tasks).

    One bag at a time, without padding, so the values are exactly the softmax the prediction used.
    """
    pool = getattr(model, "pool", None)
    if job.store is None or pool is None:
        return empty_frame()
    model.eval()
    frames = []
    for sample_id, slide_ids in zip(test["sample_id"], test["slide_ids"], strict=True):
        bag = job.store.get(list(slide_ids)).to(job.device)
        attention = pool(bag)[1][0].float().cpu().numpy()
        lengths = [job.store.shape(s)[0] for s in slide_ids]
        coords = [job.store.coords(s) for s in slide_ids]
        frames.append(attention_frame(fold, sample_id, list(slide_ids), lengths, coords, attention))
    return pd.concat(frames, ignore_index=True) if frames else empty_frame()

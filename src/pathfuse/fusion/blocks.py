"""A block of aligned expert rows: one (fold, split, oof) of a task, same order for every expert."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")


@dataclass
class Block:
    """Rows of one (fold, split, oof) block, identical order for every expert.

    Attributes:
        logits: [N, M, K] the M experts' logits (K classes, or T hazard logits).
        embeddings: per expert [N, E_m] pooled slide embeddings, or None (tile tasks, or an
            expert that did not record them).
        bin_index: survival only, each sample's time bin under the fold's bin edges.
    """

    sample_id: np.ndarray
    patient_id: np.ndarray
    label: np.ndarray
    time: np.ndarray
    event: np.ndarray
    logits: np.ndarray
    embeddings: list[np.ndarray] | None = None
    bin_index: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.sample_id)

    def take(self, rows: np.ndarray) -> Block:
        """The block's rows ``rows`` (indices), same order for every expert (e.g. one inner fold)."""
        return Block(sample_id=self.sample_id[rows], patient_id=self.patient_id[rows], label=self.label[rows],
                     time=self.time[rows], event=self.event[rows], logits=self.logits[rows],
                     embeddings=None if self.embeddings is None else [e[rows] for e in self.embeddings],
                     bin_index=None if self.bin_index is None else self.bin_index[rows])

    def frame(self, fold: int, split: str, oof: bool) -> pd.DataFrame:
        """The contract's identity and target columns for these rows (no logits yet)."""
        return pd.DataFrame({
            "fold": np.full(len(self), fold, dtype=np.int32),
            "split": split,
            "oof": np.full(len(self), oof, dtype=bool),
            "sample_id": self.sample_id.astype(str),
            "patient_id": self.patient_id.astype(str),
            "label": self.label.astype(np.int64),
            "time": self.time.astype(np.float64),
            "event": self.event.astype(np.int8),
        })

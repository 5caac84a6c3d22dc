"""A small slide cohort with features and its label table, for the label and patient tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pathfuse.paths import Layout
from support.synthetic_experts import bag, write_slides


def write_cohort(root, n=12, failed=("S099",), skipped=("S098",)) -> None:
    """``n`` slides S000.. with features under ``root/results``, one failed and one skipped."""
    rng = np.random.default_rng(0)
    write_slides(
        Layout(root / "results"),
        {f"S{i:03d}": bag(rng, 5, 4, None) for i in range(n)},
        failed=failed,
        skipped=skipped,
    )


def write_labels(root, rows, name="labels_bin.csv") -> None:
    """A label table (one dict per row) at ``root/name``."""
    pd.DataFrame(rows).to_csv(root / name, index=False)

"""The demo's external cohort: new cases from another "scanner", for ``task_data.<task>.external``.

Its cases are drawn like the demo's (same latent factors, same label rules, so a model that
learned the demo's signal can still read it), but every slide is stained differently — its hue
and eosin strength shifted by ``demo.external.hue_shift`` / ``eosin_shift`` — and scanned at
another resolution (``demo.external.mpp``; tiling resamples it to ``tiling.target_mpp``). The
encoders that see stain colour meet colours they were never trained on: the external numbers
differ visibly from the cross-validation ones, as they do between hospitals.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from pathfuse.config import TaskSpec
from pathfuse.demo.cohort import make_cohort, make_labels
from pathfuse.demo.design import Design
from pathfuse.demo.splits import write_csv
from pathfuse.settings import DemoSettings

#: Case id prefix and folder of the external cohort (under ``demo.out_dir``).
PREFIX = "EXT"
FOLDER = "external"


def external_slides(seed: int, settings: DemoSettings) -> pd.DataFrame:
    """The external cohort's slides (as :func:`pathfuse.demo.cohort.make_cohort`), their looks shifted."""
    ext = settings.external
    slides = make_cohort(seed, settings.model_copy(update={"n_cases": ext.n_cases}), PREFIX, "cohort-external")
    slides["look"] = pd.Series([replace(look, hue=look.hue + ext.hue_shift, eosin=look.eosin + ext.eosin_shift)
                                for look in slides["look"]], index=slides.index, dtype=object)
    return slides


def write_external_labels(seed: int, out: Path, slides: pd.DataFrame, designs: Mapping[str, Design],
                          tasks: Mapping[str, TaskSpec], noise: float) -> list[Path]:
    """Its label tables (``external/labels/<table>.csv``, one row per slide), by the demo's label rules."""
    cases = slides.drop_duplicates("case_id").reset_index(drop=True)
    written = []
    tables: dict[str, Any] = make_labels(seed, cases, designs, tasks, noise)
    for stem, table in tables.items():
        path = out / FOLDER / "labels" / f"{stem}.csv"
        write_csv(slides[["case_id", "slide_id"]].merge(table, on="case_id", how="left"), path)
        written.append(path)
    return written

"""Features-only cohorts as a TRIDENT job tree: bags, label tables, split files and a run config.

Shared by the end-to-end runs of imported features and the fault-injection tests: the bags are
real HDF5 files in TRIDENT's layout (``features``, ``coords`` with TRIDENT's attributes), so every
check and import reads them as it would a lab's tree.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import yaml

from support.reduced_demo import REPO

TRIDENT_ATTRS = {"patch_size": 256, "patch_size_level0": 512, "level0_magnification": 40, "target_magnification": 20}


def quick_settings() -> dict[str, Any]:
    """The demo's short schedules (experts, fusion, report), so each job takes seconds."""
    demo = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    settings = {k: demo[k] for k in ("experts", "fusion", "report")}
    # Imported bags have no level features: the demo's shazam_levels is refused on them at start-up
    # (tests/workflow/test_fault_injection.py checks that refusal), so these runs leave it out.
    settings["fusion"]["methods"] = [m for m in settings["fusion"]["methods"] if m != "shazam_levels"]
    return settings


def write_registry(work: Path, dims: Mapping[str, int]) -> Path:
    """The packaged encoder registry plus one ``byo`` entry per imported encoder."""
    entries = yaml.safe_load((REPO / "src" / "pathfuse" / "resources" / "encoders.yaml").read_text())
    entries.update({name: {"kind": "byo", "dim": dim, "description": "imported features (test)"}
                    for name, dim in dims.items()})
    path = work / "encoders.yaml"
    path.write_text(yaml.safe_dump(entries))
    return path


def n_tiles(slide: str) -> int:
    """Tiles of a slide: the same for every encoder, as in one TRIDENT job directory."""
    return 6 + sum(map(ord, slide)) % 8


def write_bag(path: Path, feats: np.ndarray) -> Path:
    """One TRIDENT bag: ``features`` and ``coords`` (with TRIDENT's attributes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as fh:
        fh["features"] = feats
        fh["coords"] = np.stack([np.arange(len(feats)) * 512, np.zeros(len(feats))], axis=1).astype(np.int64)
        for key, value in TRIDENT_ATTRS.items():
            fh["coords"].attrs[key] = value
    return path


def write_bags(folder: Path, slides: Mapping[str, int], dim: int, seed: int) -> None:
    """A bag per slide with a label signal in the first three feature columns."""
    rng = np.random.default_rng(seed)
    for slide, label in slides.items():
        feats = rng.normal(size=(n_tiles(slide), dim)).astype(np.float32)
        feats[:, :3] += 1.5 * label
        write_bag(folder / f"{slide}.h5", feats)


def write_labels_and_splits(work: Path, slides: Mapping[str, int], n_folds: int = 3,
                            unsplit: tuple[str, ...] = ()) -> tuple[Path, str]:
    """A label table (case = slide) and round-robin train/val/test split files; ``unsplit`` ids are in none."""
    ids = sorted(slides)
    labels = pd.DataFrame({"case_id": ids, "slide_id": ids, "label": ["ILC" if slides[s] else "IDC" for s in ids]})
    labels_path = work / "labels.csv"
    labels.to_csv(labels_path, index=False)
    listed = [s for s in ids if s not in unsplit]
    (work / "splits").mkdir(exist_ok=True)
    for fold in range(n_folds):
        test = [s for i, s in enumerate(listed) if i % n_folds == fold]
        val = [s for i, s in enumerate(listed) if i % n_folds == (fold + 1) % n_folds]
        train = [s for s in listed if s not in test and s not in val]
        split = pd.DataFrame({k: pd.Series(v, dtype=object) for k, v in (("train", train), ("val", val),
                                                                         ("test", test))})
        split.to_csv(work / "splits" / f"splits_{fold}.csv", index=False)
    return labels_path, str(work / "splits" / "splits_{fold}.csv")


def trident_config(work: Path, root: Path, models: Mapping[str, str], dims: Mapping[str, int], labels: Path,
                   splits: str, n_folds: int = 3, **extra: Any) -> Path:
    """A run config of one features-only TRIDENT cohort ``tri`` and the task brca_idc_ilc."""
    config = {
        "results_dir": "results", "seed": 3, "encoders": list(models), "tasks": ["brca_idc_ilc"],
        "registries": {"tasks": str(REPO / "src" / "pathfuse" / "resources" / "tasks.yaml"),
                       "encoders": str(write_registry(work, dims))},
        "cohorts": {"tri": {"trident": {"root": str(root), "models": dict(models)}}},
        "task_data": {"brca_idc_ilc": {"cohort": "tri", "labels": str(labels), "splits": splits,
                                       "n_folds": n_folds}},
        **quick_settings(), **extra,
    }
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path

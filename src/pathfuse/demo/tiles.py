"""Synthetic tile datasets for the demo's tile-classification tasks (their layouts: :mod:`pathfuse.demo.design`).

Each class is a prototype :class:`~pathfuse.demo.tissue.TissueLook`; each image is that
prototype plus per-image noise, rendered by the same tissue renderer as the slides, so a class
is recognisable but classes overlap (a probe cannot reach 100 %). Classes sit on a Latin
square of (stain hue, nuclear density) levels (:func:`_class_prototype`), so the colour-blind
demo encoder separates density levels, the colour encoders hue levels, and only both together
name the class (docs/demo.md). Test splits of datasets with an external test centre get a
small stain shift.

Layouts follow the real datasets: class-named image folders, with split folders where the
dataset has an official split (``<name>/<split>/<class>/*.png``), without for CCRCC
(``<name>/<class>/*.png``, the task makes a holdout split), JPEG for CRC-MSI, and PatchCamelyon
HDF5 files for PCam.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pathfuse.demo.tissue import TissueLook, downsample2, render_tissue
from pathfuse.io import atomic_path

#: Output pixels per µm of the tile images: 64 px cover 128 µm, like a 256-px tile at 0.5 µm/px.
TILE_UM_PER_PX = 2.0
PCAM_UM_PER_PX = 1.0  # PatchCamelyon: 96 px at ~1 µm/px (level 2 of CAMELYON16)
PCAM_FILE = "camelyonpatch_level_2_split_{split}_{xy}.h5"


@dataclass(frozen=True)
class TileDatasetPlan:
    """How one demo tile dataset is laid out (task id = folder name under ``tiles/``)."""

    task: str
    splits: tuple[str, ...]  # "" = no split folders
    extension: str  # png | jpg | h5
    image_px: int = 64
    shifted_test: bool = False  # test images from "another centre" (stain shift)


@dataclass(frozen=True)
class TileJob:
    """One unit of work: the images of one class in one split of one dataset."""

    seed: int
    plan: TileDatasetPlan
    split: str
    class_index: int
    class_name: str
    n_classes: int
    n_images: int
    folder: Path  # where the images go (unused for HDF5 datasets)


def seeded_rng(seed: int, *parts: object) -> np.random.Generator:
    """A generator that depends only on the seed and the unit of work (not on job order)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    words = [int.from_bytes(digest[i:i + 4], "little") for i in range(0, 16, 4)]
    return np.random.default_rng(np.random.SeedSequence([seed, *words]))


def plan_tile_jobs(seed: int, out_dir: Path, datasets: Sequence[TileDatasetPlan], classes: dict[str, list[str]],
                   per_class: int) -> list[TileJob]:
    """Every (dataset, split, class) job; ``classes`` maps each task id to its class names.

    Datasets without split folders get twice ``per_class`` images per class (the task splits
    them itself), so their training sets are as large as the others'.
    """
    jobs = []
    for plan in datasets:
        names = classes[plan.task]
        for split in plan.splits:
            n_images = per_class * (2 if split == "" else 1)
            for index, name in enumerate(names):
                folder = out_dir / plan.task / split / name if split else out_dir / plan.task / name
                jobs.append(TileJob(seed, plan, split, index, name, len(names), n_images, folder))
    return jobs


def _class_prototype(seed: int, plan: TileDatasetPlan, class_index: int, n_classes: int) -> np.ndarray:
    """Latent prototype of a class: (hue, nucleus_scale, density, tumour, inflammation, eosin).

    Classes sit on an n×n grid of (hue, density) levels, n = ⌈√classes⌉, arranged as a Latin
    square (class k: hue level k mod n, density level (k div n + k) mod n), so that no two
    classes share both levels and, for two classes, they differ in both. A colour-blind
    encoder tells the density levels apart, a density-blind one the hue levels; only the two
    together name the class. The other factors add a small seeded per-class offset.
    """
    n = max(2, math.ceil(math.sqrt(n_classes)))
    levels = np.linspace(-1.2, 1.2, n) if n_classes > 2 else np.array([-0.6, 0.6])
    proto = 0.3 * seeded_rng(seed, "tiles", plan.task, "class", class_index).normal(0.0, 1.0, 6)
    proto[0] = levels[class_index % n]
    proto[2] = levels[(class_index // n + class_index) % n]
    proto[5] = 0.0  # eosin intensity would leak density into a colour view
    return proto


def _image_look(rng: np.random.Generator, proto: np.ndarray, hue_shift: float) -> TissueLook:
    """The look of one image: its class prototype plus per-image variation."""
    z = proto + rng.normal(0.0, 0.35, proto.shape)
    return TissueLook(
        hue=float(z[0] + hue_shift), nucleus_scale=float(z[1]), density=float(z[2]),
        tumour=float(0.9 / (1.0 + np.exp(-1.5 * z[3]))), inflammation=float(0.6 / (1.0 + np.exp(-1.5 * (z[4] - 1.0)))),
        eosin=float(0.3 * z[5]), tissue_fraction=float(rng.uniform(0.75, 1.0)),
    )


def render_tile_job(job: TileJob) -> np.ndarray:
    """Render the job's images: uint8 [n_images, px, px, 3].

    Images are drawn at twice their resolution and averaged 2×2, which antialiases the
    nuclei the way a scanner's optics would.
    """
    rng = seeded_rng(job.seed, "tiles", job.plan.task, job.split, job.class_index)
    proto = _class_prototype(job.seed, job.plan, job.class_index, job.n_classes)
    shift = 0.0
    if job.plan.shifted_test and job.split == "test":
        shift = float(seeded_rng(job.seed, "tiles", job.plan.task, "shift").choice([-0.25, 0.25]))
    um_per_px = PCAM_UM_PER_PX if job.plan.extension == "h5" else TILE_UM_PER_PX
    side = 2 * job.plan.image_px
    images = [downsample2(render_tissue(rng, side, side, um_per_px / 2, _image_look(rng, proto, shift)))
              for _ in range(job.n_images)]
    return np.stack(images)


def image_name(job: TileJob, number: int) -> str:
    """File name of one image: unique over the whole dataset (class and split in the stem)."""
    stem = f"{job.class_name}-{job.split}-{number:04d}" if job.split else f"{job.class_name}-{number:04d}"
    return f"{stem}.{job.plan.extension}"


def write_tile_images(job: TileJob, images: np.ndarray, quality: int) -> list[Path]:
    """Encode and write a job's images atomically (PNG, or JPEG at ``quality``)."""
    import imagecodecs

    paths = []
    for number, image in enumerate(images):
        data = (imagecodecs.jpeg_encode(image, level=quality) if job.plan.extension == "jpg"
                else imagecodecs.png_encode(image))
        path = job.folder / image_name(job, number)
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        paths.append(path)
    return paths


def write_pcam(out_dir: Path, seed: int, split: str, parts: list[tuple[int, np.ndarray]],
               patches_per_wsi: int = 4) -> list[Path]:
    """Write one PatchCamelyon split: ``x`` uint8 [N, 96, 96, 3], ``y`` uint8 [N, 1, 1, 1], meta CSV.

    ``parts`` are (class index, images) pairs; rows are shuffled (seeded) as in the real files.
    The meta CSV names a source slide (``wsi``) per row, ``patches_per_wsi`` rows each, as the
    real one does, so grouped evaluation has groups. HDF5 timestamps are off so that the same
    seed gives the same bytes.
    """
    import h5py

    x = np.concatenate([images for _, images in parts])
    y = np.concatenate([np.full(len(images), label, dtype=np.uint8) for label, images in parts])
    order = seeded_rng(seed, "tiles", "pcam", split, "order").permutation(len(y))
    arrays = {"x": x[order], "y": y[order].reshape(-1, 1, 1, 1)}
    paths = []
    for key, array in arrays.items():
        path = out_dir / "pcam" / PCAM_FILE.format(split=split, xy=key)
        with atomic_path(path) as tmp, h5py.File(tmp, "w", track_order=False) as fh:
            fh.create_dataset(key, data=array, track_times=False)
        paths.append(path)
    meta = pd.DataFrame({"wsi": [f"pcam_{split}_{row // patches_per_wsi:03d}" for row in range(len(y))],
                         "tumor_patch": arrays["y"].reshape(-1).astype(bool)})
    path = out_dir / "pcam" / f"camelyonpatch_level_2_split_{split}_meta.csv"
    with atomic_path(path) as tmp:
        meta.to_csv(tmp, index=False)
    return [*paths, path]

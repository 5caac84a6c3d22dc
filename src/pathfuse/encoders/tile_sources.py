"""Find the samples of a tile dataset and read single images from it.

Three layouts (``tile_datasets.<name>.format``):

* ``image_folder`` — ``<path>/<split>/<class>/*.png|jpg|jpeg|tif|tiff`` or ``<path>/<class>/*``;
  split folders ``train``, ``val``/``valid``/``validation``, ``test`` (normalised to
  train | val | test; no split folders → split ""). sample id = the file's path below
  ``<path>`` without suffix.
* ``pcam_hdf5`` — PatchCamelyon ``*split_<train|valid|test>_{x,y}.h5`` (``x``: [N, 96, 96, 3]
  uint8, ``y``: [N, 1, 1, 1]); labels 0/1 become the task's class names; the optional
  ``*split_<split>_meta.csv`` gives the group (its ``wsi`` column). sample id ``<split>_<row>``.
* ``features`` — no images: ``<path>`` is a label table CSV (``sample_id,label[,split][,group]``)
  and each encoder's feature matrix is imported (:mod:`.byo`).

Every listing is a DataFrame with ``sample_id, label, split, group`` plus where to read the
image (``file`` and, for HDF5, ``row``), sorted so the order never depends on the file system.
A configured ``groups`` CSV or ``group_pattern`` replaces the listing's own groups
(:mod:`.tile_groups`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pathfuse.config import Config, ConfigError
from pathfuse.encoders.tile_groups import assign_groups, read_sample_table

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "test": "test", "testing": "test"}
INDEX_COLUMNS = ["sample_id", "label", "split", "group"]


def list_samples(cfg: Config, dataset: str) -> pd.DataFrame:
    """The samples of tile dataset ``dataset`` in its configured format, with their groups.

    The groups are the samples' patients or slides (:func:`pathfuse.encoders.tile_groups.assign_groups`;
    where they came from is in ``attrs["group_source"]``).
    """
    spec = cfg.tile_dataset(dataset)
    root = Path(spec.path)
    if spec.format == "image_folder":
        listed = list_image_folder(root)
    elif spec.format == "pcam_hdf5":
        listed = list_pcam(root, dataset_classes(cfg, dataset))
    else:
        listed = read_label_table(root)
    return assign_groups(spec, listed)


def dataset_classes(cfg: Config, dataset: str) -> list[str]:
    """Class names of the first task (run tasks first, then the registry) that uses ``dataset``."""
    for task_id in [*cfg.task_ids, *cfg.task_registry]:
        task = cfg.task(task_id)
        if not task.is_slide_task and task.dataset == dataset:
            return task.display_classes
    return ["0", "1"]


def list_image_folder(root: Path) -> pd.DataFrame:
    """Samples of a class-folder dataset, with or without split folders."""
    if not root.is_dir():
        raise FileNotFoundError(f"tile dataset folder {root} does not exist")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir())
    split_dirs = [p for p in subdirs if p.name.lower() in SPLIT_NAMES]
    if split_dirs and len(split_dirs) != len(subdirs):
        others = [p.name for p in subdirs if p not in split_dirs]
        raise ConfigError(f"{root}: mixes split folders {[p.name for p in split_dirs]} with other folders "
                          f"{others}; use <split>/<class>/ or <class>/ throughout")
    groups = [(SPLIT_NAMES[p.name.lower()], p) for p in split_dirs] if split_dirs else [("", root)]
    records = []
    for split, folder in groups:
        for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            for file in sorted(class_dir.rglob("*")):
                if file.suffix.lower() in IMAGE_SUFFIXES and file.is_file():
                    sample_id = file.relative_to(root).with_suffix("").as_posix()
                    records.append({"sample_id": sample_id, "label": class_dir.name, "split": split,
                                    "group": sample_id, "file": str(file), "row": -1})
    if not records:
        raise FileNotFoundError(f"{root}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in class folders")
    return pd.DataFrame.from_records(records)


def list_pcam(root: Path, classes: list[str]) -> pd.DataFrame:
    """Samples of PatchCamelyon HDF5 files; label i → ``classes[i]``."""
    import h5py

    frames = []
    for x_file in sorted(root.glob("*split_*_x.h5")):
        match = re.search(r"split_([a-z]+)_x\.h5$", x_file.name)
        if match is None or match.group(1) not in SPLIT_NAMES:
            continue
        split = SPLIT_NAMES[match.group(1)]
        y_file = x_file.with_name(x_file.name[:-len("_x.h5")] + "_y.h5")
        if not y_file.exists():
            raise FileNotFoundError(f"{x_file}: its labels {y_file.name} are missing")
        with h5py.File(x_file, "r") as fx, h5py.File(y_file, "r") as fy:
            n = fx["x"].shape[0]
            labels = np.asarray(fy["y"]).reshape(-1).astype(np.int64)
        if len(labels) != n:
            raise ValueError(f"{x_file}: {n} images but {y_file.name} has {len(labels)} labels")
        if labels.min(initial=0) < 0 or labels.max(initial=0) >= len(classes):
            raise ValueError(f"{y_file}: labels outside 0..{len(classes) - 1} (classes {classes})")
        ids = [f"{split}_{i}" for i in range(n)]
        meta_file = x_file.with_name(x_file.name[:-len("_x.h5")] + "_meta.csv")
        groups = ids
        if meta_file.exists():
            meta = pd.read_csv(meta_file)
            if "wsi" in meta.columns and len(meta) == n:
                groups = meta["wsi"].astype(str).tolist()
        frames.append(pd.DataFrame({"sample_id": ids, "label": [classes[i] for i in labels], "split": split,
                                    "group": groups, "file": str(x_file), "row": np.arange(n)}))
    if not frames:
        raise FileNotFoundError(f"{root}: no PatchCamelyon files *split_<train|valid|test>_x.h5")
    return pd.concat(frames, ignore_index=True)


def read_label_table(path: Path) -> pd.DataFrame:
    """A features-format dataset's label table: ``sample_id,label[,split][,group]``."""
    table = read_sample_table(path, ("sample_id", "label"),
                              f"label table {path} of a features-format tile dataset")  # [,split][,group]
    if "split" not in table:
        table["split"] = ""
    bad_split = sorted(set(table["split"]) - set(SPLIT_NAMES) - {""})
    if bad_split:
        raise ValueError(f"{path}: unknown split value(s) {bad_split}; use train, val, test or empty")
    table["split"] = table["split"].map(lambda s: SPLIT_NAMES.get(s, s))
    if "group" not in table:
        table["group"] = table["sample_id"]
    table["file"], table["row"] = "", -1
    return table[[*INDEX_COLUMNS, "file", "row"]]


def read_image(file: str, row: int, open_h5: dict[str, Any]) -> np.ndarray:
    """One sample as uint8 RGB HxWx3: an HDF5 row (``row >= 0``) or an image file.

    ``open_h5`` caches HDF5 handles for the calling process (h5py handles must not cross a fork).
    """
    if row >= 0:
        handle = open_h5.get(file)
        if handle is None:
            import h5py

            handle = open_h5[file] = h5py.File(file, "r")
        return np.asarray(handle["x"][row], dtype=np.uint8)
    return _read_file(Path(file))


def _read_file(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except Exception as pil_err:  # PIL lacks some TIFF codecs; tifffile has them
        if path.suffix.lower() not in (".tif", ".tiff"):
            raise
        import tifffile

        try:
            return _to_rgb(tifffile.imread(path))
        except (tifffile.TiffFileError, ValueError, OSError):
            raise pil_err from None


def _to_rgb(array: Any) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.dtype != np.uint8:
        raise ValueError(f"expected 8-bit image, got {array.dtype}")
    return np.ascontiguousarray(array[..., :3])

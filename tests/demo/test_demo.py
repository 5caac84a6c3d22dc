"""The synthetic demo cohort: real OpenSlide reads, the published file formats, and signal.

One reduced demo (12 cases, 1536×1024 slides, 4 tile images per class) is generated per module;
the determinism test generates two more.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import openslide
import pandas as pd
import pytest
import yaml
from PIL import Image
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from pathfuse.config import Config, ConfigError, load_yaml
from pathfuse.demo.cohort import make_labels
from pathfuse.demo.design import DESIGNS, LATENT, MutationColumn, RankedClasses, SurvivalTimes
from pathfuse.demo.generate import generate_demo, task_facts
from pathfuse.demo.tiles import TileDatasetPlan
from pathfuse.demo.tissue import TissueLook, render_tissue

REPO = Path(__file__).resolve().parents[2]
TINY = {"demo.n_cases": 12, "demo.slide_width_px": 1536, "demo.slide_height_px": 1024,
        "demo.tile_images_per_class": 4,
        # 12 cases cannot keep all 6-7 classes in every training set with 2 folds (each fold's
        # rest has ~1 case per class, and validation needs one): 3 folds and the holdout, as before.
        "task_data.bracs_7.n_folds": 3, "task_data.panda_isup.n_folds": 1}
MUTATIONS = ["tp53_mut", "pik3ca_mut", "pten_mut", "arid1a_mut", "nf1_mut"]  # label columns of the mut_* tasks
SURVIVAL = [t for t, design in DESIGNS.items() if isinstance(design, SurvivalTimes)]
CLASS_TABLES = {"brca_idc_ilc": "label", "bracs_3": "label", "bracs_7": "label",
                "crc_tumor_normal": "label", "panda_isup": "isup_grade"}


def demo_config(out_dir: Path, **overrides: object) -> Config:
    return Config.from_file(REPO / "config" / "config.yaml", {
        "registries.tasks": str(REPO / "src" / "pathfuse" / "resources" / "tasks.yaml"),
        "registries.encoders": str(REPO / "src" / "pathfuse" / "resources" / "encoders.yaml"),
        "demo.out_dir": str(out_dir), **TINY, **overrides})


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, Path]:
    out = tmp_path_factory.mktemp("demo")
    cfg = demo_config(out)
    assert generate_demo(cfg) == out / "demo.done"
    return cfg, out


def slide_table(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "labels" / "brca_idc_ilc.csv")[["case_id", "slide_id"]]


# ----------------------------------------------------------------------------- slides
def test_openslide_reads_every_slide_with_mpp_vendor_and_pyramid(demo):
    _, out = demo
    paths = sorted((out / "slides").glob("*.tiff"))
    assert {p.stem for p in paths} == set(slide_table(out)["slide_id"])
    vendors = []
    for path in paths:
        with openslide.OpenSlide(path) as slide:
            props = slide.properties
            vendors.append(props["openslide.vendor"])
            assert float(props["openslide.mpp-x"]) == pytest.approx(0.25)
            assert float(props["openslide.mpp-y"]) == pytest.approx(0.25)
            assert slide.level_count > 1
            assert slide.level_downsamples[1] == pytest.approx(2.0)
            if props["openslide.vendor"] == "aperio":
                assert props["openslide.objective-power"] == "40"
            width, height = slide.level_dimensions[1]
            region = np.asarray(slide.read_region((0, 0), 1, (width, height)).convert("RGB"))
        saturation = np.asarray(Image.fromarray(region).convert("HSV"))[..., 1]
        assert 0.25 < (saturation > 40).mean() < 0.85, f"{path.name}: tissue fraction off"
    assert set(vendors) == {"aperio", "generic-tiff"}


# ----------------------------------------------------------------------------- labels
def test_label_tables_have_published_columns_and_every_class(demo):
    cfg, out = demo
    slides = slide_table(out)
    assert slides["case_id"].nunique() == 12 and len(slides) > 12  # some cases have two slides
    for task, column in CLASS_TABLES.items():
        table = pd.read_csv(out / "labels" / f"{task}.csv")
        assert list(table.columns) == ["case_id", "slide_id", column]
        assert table[["case_id", "slide_id"]].equals(slides)
        assert table.groupby("case_id")[column].nunique().max() == 1  # a case's slides agree
        classes = {str(c) for c in cfg.task(task).classes}
        assert set(table[column].astype(str)) == classes, task
    mutation = pd.read_csv(out / "labels" / "mutation.csv")
    assert list(mutation.columns) == ["case_id", "slide_id", *MUTATIONS]
    per_case = mutation.drop_duplicates("case_id")
    for gene in MUTATIONS:
        assert set(per_case[gene]) == {0, 1}
        assert 0.15 <= per_case[gene].mean() <= 0.5, gene
    for task in SURVIVAL:
        table = pd.read_csv(out / "labels" / f"{task}.csv")
        assert list(table.columns) == ["case_id", "slide_id", "survival_months", "censorship"]
        assert (table["survival_months"] > 0).all()
        assert 0.3 <= table.drop_duplicates("case_id")["censorship"].mean() <= 0.6


# ----------------------------------------------------------------------------- splits
def read_split(path: Path) -> dict[str, set[str]]:
    frame = pd.read_csv(path, dtype=str)
    assert list(frame.columns) == ["train", "val", "test"]
    return {part: set(frame[part].dropna()) for part in frame.columns}


def split_labels(out: Path, folder: str) -> list[pd.Series]:
    """Per-case label columns whose classes every training set must contain."""
    if folder == "mutation":
        table = pd.read_csv(out / "labels" / "mutation.csv")
        columns = list(MUTATIONS)
    elif folder.startswith("surv_"):
        table = pd.read_csv(out / "labels" / f"{folder}.csv")
        columns = ["censorship"]
    else:
        table = pd.read_csv(out / "labels" / f"{folder}.csv")
        columns = [CLASS_TABLES[folder]]
    table = table.drop_duplicates("case_id").set_index("case_id")
    return [table[c] for c in columns]


def test_splits_are_per_patient_and_cover_every_class(demo):
    cfg, out = demo
    n_folds = task_facts(cfg).folds  # the demo config's folds (2), the registry's where it is silent
    cases = set(slide_table(out)["case_id"])
    folders = sorted(p.name for p in (out / "splits").iterdir())
    assert folders == sorted([*CLASS_TABLES, "mutation", *SURVIVAL])
    for folder in folders:
        files = sorted((out / "splits" / folder).glob("splits_*.csv"))
        assert [f.name for f in files] == [f"splits_{k}.csv" for k in range(n_folds[folder])]
        tested: list[str] = []
        for path in files:
            split = read_split(path)
            assert split["train"] and split["val"] and split["test"], path
            if folder == "surv_gbmlgg":  # the published defect, reproduced on purpose
                assert split["val"] == split["test"]
                assert split["train"] | split["test"] == cases and not split["train"] & split["test"]
            else:
                assert split["train"] | split["val"] | split["test"] == cases, path
                assert sum(len(s) for s in split.values()) == len(cases), f"{path}: a case in two splits"
            for labels in split_labels(out, folder):
                in_train = set(labels[sorted(split["train"])])
                assert in_train == set(labels), f"{path}: {labels.name} class missing in train"
            tested += sorted(split["test"])
        if len(files) > 1:  # k-fold: disjoint test sets covering every case of a non-singleton stratum
            assert len(tested) == len(set(tested)), f"{folder}: a case in two test sets"
            strata = split_labels(out, folder)[0]
            counts = strata.map(strata.value_counts())
            assert set(strata.index[counts > 1]) <= set(tested), f"{folder}: cases never tested"


# ----------------------------------------------------------------------------- tiles
def test_tile_datasets_have_class_folders_splits_and_pcam_arrays(demo):
    import h5py

    cfg, out = demo
    layouts = {"ccrcc_tissue": [""], "crc100k": ["train", "test"], "crc_msi": ["train", "test"],
               "tcga_tils": ["train", "val", "test"], "esca_tissue": ["train", "test"]}
    for name, splits in layouts.items():
        classes = {str(c) for c in cfg.task(name).classes}
        for split in splits:
            folder = out / "tiles" / name / split
            assert {p.name for p in folder.iterdir()} == classes, folder
            for class_dir in folder.iterdir():
                images = sorted(class_dir.iterdir())
                assert len(images) == (8 if name == "ccrcc_tissue" else 4)
                assert {p.suffix for p in images} == {".jpg" if name == "crc_msi" else ".png"}
                with Image.open(images[0]) as image:
                    assert image.size == (64, 64) and image.mode == "RGB"
    for split in ("train", "valid", "test"):
        with h5py.File(out / "tiles" / "pcam" / f"camelyonpatch_level_2_split_{split}_x.h5") as fx, \
                h5py.File(out / "tiles" / "pcam" / f"camelyonpatch_level_2_split_{split}_y.h5") as fy:
            x, y = fx["x"], fy["y"][:]
            assert x.dtype == np.uint8 and x.shape == (8, 96, 96, 3)
            assert y.dtype == np.uint8 and y.shape == (8, 1, 1, 1) and set(y.ravel()) == {0, 1}


# ----------------------------------------------------------------------------- behaviour
def test_missing_file_regenerates_the_same_bytes_with_any_worker_count(demo, tmp_path):
    cfg, out = demo
    manifest = json.loads((out / "demo.done").read_text())["files"]
    slide = min((out / "slides").glob("*.tiff"))
    stamp = slide.stat().st_mtime_ns
    generate_demo(cfg)  # up to date: nothing is rewritten
    assert slide.stat().st_mtime_ns == stamp

    twin = tmp_path / "twin"
    shutil.copytree(out, twin)
    (twin / "labels" / "bracs_7.csv").unlink()  # e.g. deleted by hand: the manifest no longer holds
    kept = twin / "splits" / "mutation" / "splits_0.csv"
    os.utime(kept, ns=(0, 0))
    generate_demo(demo_config(twin, **{"demo.workers": 1}))
    assert kept.stat().st_mtime_ns > 0  # regenerated in full, not patched
    assert json.loads((twin / "demo.done").read_text())["files"] == manifest
    assert (twin / "labels" / "bracs_7.csv").read_bytes() == (out / "labels" / "bracs_7.csv").read_bytes()

    generate_demo(demo_config(twin, seed=7, **{"demo.n_cases": 13}))
    other = json.loads((twin / "demo.done").read_text())["files"]
    slides = {f for f in other if f.startswith("slides/")}
    assert all(other[f] != manifest.get(f) for f in slides)
    assert {f"slides/{p.name}" for p in (twin / "slides").iterdir()} == slides  # no stale seed-42 slides


def test_slide_colour_carries_the_hidden_stain_factor_and_a_label(demo):
    _, out = demo
    truth = pd.read_csv(out / "truth" / "latent.csv")
    ratios = []
    for slide_id in truth["slide_id"]:
        with openslide.OpenSlide(out / "slides" / f"{slide_id}.tiff") as slide:
            level = slide.level_count - 1
            rgb = np.asarray(slide.read_region((0, 0), level, slide.level_dimensions[level]).convert("RGB"))
        od = -np.log((rgb.astype(float) + 1.0) / 256.0)
        tissue = od.sum(axis=-1) > 0.3
        ratios.append(od[tissue, 0].mean() / od[tissue, 2].mean())  # red vs blue absorbance
    truth["ratio"] = ratios
    assert spearmanr(truth["ratio"], truth["hue"])[0] > 0.6
    labels = pd.read_csv(out / "labels" / "mutation.csv").merge(truth, on="slide_id")
    assert roc_auc_score(labels["tp53_mut"], labels["ratio"]) > 0.65  # tp53 leans on stain hue


def test_nucleus_size_changes_texture_at_64_px_but_not_mean_colour():
    """The scale design: nucleus size at constant nuclear area is texture, not colour."""
    def view(scale: float, px: int, seed: int) -> np.ndarray:
        look = TissueLook(nucleus_scale=scale, tissue_fraction=1.0)
        tile = render_tissue(np.random.default_rng(seed), 256, 256, 0.5, look)
        return np.asarray(Image.fromarray(tile).resize((px, px), Image.Resampling.BOX)).astype(float)

    def grain(image: np.ndarray) -> float:
        grey = image.mean(axis=-1)
        return float(np.abs(4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1]
                            - grey[1:-1, :-2] - grey[1:-1, 2:]).mean())

    small = [view(-1.5, 64, s) for s in range(6)]
    large = [view(1.5, 64, s) for s in range(6)]
    colour_small = np.mean([v.reshape(-1, 3).mean(0) for v in small], axis=0)
    colour_large = np.mean([v.reshape(-1, 3).mean(0) for v in large], axis=0)
    assert np.abs(colour_small - colour_large).max() < 3.0
    assert np.mean([grain(v) for v in small]) > 1.4 * np.mean([grain(v) for v in large])


def test_bad_demo_setting_is_named():
    with pytest.raises(ConfigError, match=r"demo\.n_cases"):
        demo_config(Path("unused"), **{"demo.n_cases": 5})


def test_fold_counts_follow_the_tasks_the_run_config_gives_data_for(tmp_path):
    """A reduced run (task_data for mut_tp53 only, 2 folds) must not get 5 mutation folds."""
    import yaml

    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    resources = REPO / "src" / "pathfuse" / "resources"
    raw["registries"] = {"tasks": str(resources / "tasks.yaml"), "encoders": str(resources / "encoders.yaml")}
    raw["tasks"] = ["mut_tp53", "brca_idc_ilc"]
    raw["task_data"] = {t: raw["task_data"][t] for t in raw["tasks"]}
    folds = task_facts(Config.from_dict(raw)).folds
    assert folds["mutation"] == 2 and folds["brca_idc_ilc"] == 2
    assert folds["bracs_7"] == 5 and folds["panda_isup"] == 1  # registry defaults where the run is silent


def test_a_new_registry_task_gets_demo_data_from_its_kind(tmp_path):
    """The demo's tasks come from the registry (its lp22 tasks, and the run's).

    A task the design does not list gets labels, splits or a tile dataset by its kind's default design.
    """
    registry = load_yaml(REPO / "src" / "pathfuse" / "resources" / "tasks.yaml")
    registry["new_grade"] = dict(registry["brca_idc_ilc"], classes=["low", "mid", "high"], label_column="grade")
    registry["new_surv"] = dict(registry["surv_brca"], time_column="months", censorship_column="censored")
    registry["new_tiles"] = dict(registry["crc_msi"], dataset="new_tiles")
    path = tmp_path / "tasks.yaml"
    path.write_text(yaml.safe_dump(registry))
    cfg = demo_config(tmp_path, **{
        "registries.tasks": str(path), "tasks": ["brca_idc_ilc", "unitopatho"],
        "task_data.unitopatho": {"dataset": "demo_unitopatho"},
        "tile_datasets.demo_unitopatho": {"path": str(tmp_path / "tiles" / "unitopatho"), "format": "image_folder"}})
    demo = task_facts(cfg)
    assert list(demo.designs)[:len(DESIGNS)] == list(DESIGNS)  # the manifest's order, then registry/run order
    assert list(demo.designs)[len(DESIGNS):] == ["new_grade", "new_surv", "new_tiles", "unitopatho"]
    assert isinstance(demo.designs["new_grade"], RankedClasses) and isinstance(demo.designs["new_surv"], SurvivalTimes)
    assert demo.designs["unitopatho"] == TileDatasetPlan("unitopatho", ("train", "test"), "png")
    assert demo.folds["new_grade"] == demo.folds["new_surv"] == 5 and "new_tiles" not in demo.folds
    assert demo.classes["new_tiles"] == ["nonMSIH", "MSIH"] and "huncrc" not in demo.designs  # not lp22, not run
    rng = np.random.default_rng(0)
    cases = pd.DataFrame({"case_id": [f"C{i:02d}" for i in range(30)], **{k: rng.standard_normal(30) for k in LATENT}})
    tables = make_labels(0, cases, demo.designs, demo.tasks, noise=0.5)
    assert list(tables["new_grade"].columns) == ["case_id", "grade"]
    assert set(tables["new_grade"]["grade"]) == {"low", "mid", "high"}
    assert list(tables["new_surv"].columns) == ["case_id", "months", "censored"]
    assert list(tables["mutation"].columns) == ["case_id", *MUTATIONS]
    assert sum(isinstance(d, MutationColumn) for d in demo.designs.values()) == len(MUTATIONS)

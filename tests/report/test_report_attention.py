"""The attention and gate figures on synthetic runs: which samples, what each panel can show, size.

One slide task with a real pyramidal TIFF behind its tile index (thumbnail), one survival task
whose slides have no file (a features-only cohort: attention over the tile coordinates), one
expert whose bags have no coordinates, and a tile task with images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from matplotlib.image import imread
from support.evaluation import ENCODERS, make_config, write_task

from pathfuse.attention import attention_frame, rank_normalise, read_attention, write_attention
from pathfuse.io import read_parquet, write_parquet
from pathfuse.report.attention import attention_figure
from pathfuse.report.attention_data import disagreement, distributions, task_view

TASKS = ["brca_idc_ilc", "surv_brca", "crc100k"]
STRENGTHS = {"demo_vit_a": 0.3, "demo_vit_b": 2.0, "demo_vit_c": 1.0, "logitprod": 2.5, "mean_logits": 1.0}
SIDE, GRID = 2048, 8  # level-0 slide side, tiles per row


def _slide(path: Path) -> Path:
    """A two-level zlib TIFF OpenSlide reads (a pink disc on glass)."""
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    disc = (xx - SIDE / 2) ** 2 + (yy - SIDE / 2) ** 2 < (SIDE / 3) ** 2
    image = np.where(disc[..., None], np.array([200, 120, 170], np.uint8), np.array([240, 240, 240], np.uint8))
    with tifffile.TiffWriter(path) as tif:
        for level in range(2):
            tif.write(np.ascontiguousarray(image[:: 2**level, :: 2**level]), tile=(256, 256), compression="zlib",
                      photometric="rgb", subfiletype=0 if level == 0 else 1, metadata=None,
                      resolution=(1e4 / (0.5 * 2**level),) * 2, resolutionunit="CENTIMETER")
    return path


def _attention(cfg, task: str, coords: bool, slide_suffix: str) -> None:
    """Every expert's attention for every test sample: peaked at a tile that differs per expert."""
    xy = np.stack(np.meshgrid(np.arange(GRID), np.arange(GRID)), -1).reshape(-1, 2) * (SIDE // GRID)
    for e, encoder in enumerate(ENCODERS):
        preds, _ = read_parquet(cfg.layout.expert_predictions(task, encoder), schema="predictions")
        peak = xy[[9, 30, 54][e]]
        weights = np.exp(-np.linalg.norm(xy - peak, axis=1) / 400)
        frames = [attention_frame(int(f), s, [s + slide_suffix], [len(xy)],
                                  [xy if coords and encoder != "demo_vit_c" else None], weights / weights.sum())
                  for f, s in preds.loc[preds["split"] == "test", ["fold", "sample_id"]].itertuples(index=False)]
        write_attention(frames, cfg.layout.expert_attention(task, encoder), {"task": task})


def _tile_images(cfg, root: Path) -> None:
    """Images for the tile task's samples; sample ids become <class>/<id>, as image folders name them."""
    classes = cfg.task("crc100k").display_classes
    files = [cfg.layout.expert_predictions("crc100k", e) for e in ENCODERS]
    files += [cfg.layout.fusion_predictions("crc100k", m) for m in ("logitprod", "mean_logits")]
    for path in files:
        df, meta = read_parquet(path, schema="predictions")
        df["sample_id"] = [f"{classes[y]}/{s}" for y, s in zip(df["label"], df["sample_id"], strict=True)]
        write_parquet(df, path, schema="predictions", meta=meta)
    rng = np.random.default_rng(0)
    for sample in df["sample_id"].unique():
        target = root / "crc100k" / f"{sample}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        import matplotlib.image

        matplotlib.image.imsave(target, rng.integers(0, 255, size=(32, 32, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("attention")
    cfg = make_config(root, TASKS, methods=["logitprod", "mean_logits"])
    for task in TASKS:
        write_task(cfg, task, STRENGTHS)
    slide = _slide(root / "slide.tiff")
    _attention(cfg, "brca_idc_ilc", coords=True, slide_suffix="")
    _attention(cfg, "surv_brca", coords=True, slide_suffix="_nofile")  # not in the tile index
    preds, _ = read_parquet(cfg.layout.expert_predictions("brca_idc_ilc", "demo_vit_a"), schema="predictions")
    index = pd.DataFrame({"slide_id": preds["sample_id"].unique()}).assign(path=str(slide))
    write_parquet(index, cfg.layout.tile_index("demo"), schema="tile_index")
    _tile_images(cfg, root)
    figures = {t: attention_figure(cfg, t, cfg.layout.attention_figure(t).with_suffix("")) for t in TASKS}
    return cfg, figures


def test_rank_normalise_is_within_slide_and_ignores_scale():
    assert np.allclose(rank_normalise(np.array([0.1, 0.5, 0.2])), [0, 1, 0.5])
    assert np.allclose(rank_normalise(np.array([1e-5, 5e-5, 2e-5])), rank_normalise(np.array([0.1, 0.5, 0.2])))
    assert np.allclose(rank_normalise(np.array([0.3, 0.3])), [0.5, 0.5]) and rank_normalise(np.array([2.0])) == 1


def test_attention_rows_split_a_patient_bag_into_its_slides(tmp_path):
    frame = attention_frame(1, "p1", ["s1", "s2"], [2, 3], [np.array([[0, 0], [256, 0]]), None],
                            np.full(5, 0.2))
    assert frame["slide_id"].tolist() == ["s1", "s1", "s2", "s2", "s2"] and frame["tile"].tolist() == [0, 1, 0, 1, 2]
    assert frame["x"].isna().tolist() == [False, False, True, True, True]
    back = read_attention(write_attention([frame], tmp_path / "a.parquet", {}), ["p1"])
    assert back["x"].iloc[1] == 256 and back["attention"].dtype == np.float32
    with pytest.raises(ValueError, match="attention values"):
        attention_frame(0, "p", ["s"], [3], [None], np.ones(2))


def test_picks_are_the_test_samples_where_the_experts_disagree_most(run):
    cfg, _ = run
    view = task_view(cfg, "brca_idc_ilc", 3)
    rows = [read_parquet(cfg.layout.expert_predictions("brca_idc_ilc", e), schema="predictions")[0] for e in ENCODERS]
    rows = [r[r["split"] == "test"].sort_values(["fold", "sample_id"]) for r in rows]
    kind = cfg.task("brca_idc_ilc").kind_strategy
    score = disagreement(kind, np.stack([distributions(kind, np.stack(list(r["logits"]))) for r in rows]))
    assert [p.disagreement for p in view.picks] == pytest.approx(sorted(score, reverse=True)[:3])
    assert view.gate_method == "logitprod" and all(p.gate is not None for p in view.picks)
    assert all(p.gate is not None and np.isclose(p.gate.sum(), 1.0, atol=1e-5) for p in view.picks)
    surv = task_view(cfg, "surv_brca", 2)  # gates per time bin, averaged: still one weight per expert
    assert all(p.gate is not None and p.gate.shape == (3,) and np.isclose(p.gate.sum(), 1, atol=1e-5)
               for p in surv.picks)
    assert all(p.truth.startswith("time ") and p.fused_text is not None and p.fused_text.startswith("risk ")
               for p in surv.picks)


def test_one_small_figure_per_task(run):
    cfg, figures = run
    for task, written in figures.items():
        assert written == [cfg.layout.attention_figure(task)], task
        assert written[0].stat().st_size < 400_000, (task, written[0].stat().st_size)
        height, width = imread(written[0]).shape[:2]
        assert 500 < width < 1500 and 300 < height < 1500, (task, width, height)


def test_a_task_without_experts_still_gets_a_figure_that_says_so(tmp_path):
    cfg = make_config(tmp_path, ["brca_idc_ilc"], methods=["logitprod"])
    written = attention_figure(cfg, "brca_idc_ilc", tmp_path / "fig")
    assert written[0].exists() and written[0].stat().st_size > 1000

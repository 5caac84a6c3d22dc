"""The tiling stage end to end: outputs, resume, every bad-slide case in fail and skip mode."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from support.slides import corrupt_tile

from pathfuse.io import read_parquet
from pathfuse.paths import shard_name
from pathfuse.slides.errors import CohortError, SlideError
from pathfuse.slides.tiling import index_cohort, tile_shard

SMALL = {"width": 768, "height": 512, "ellipses": [(0.5, 0.5, 0.4, 0.4)]}


def shard_table(cfg, shard=0):
    return read_parquet(cfg.layout.tile_shard("c", shard_name(shard)), schema="tile_shard")[0]


def test_tile_shards_write_tiles_qc_manifests_and_index(make_slide, make_config, tmp_path):
    for name in ("s1", "s2", "s3"):
        make_slide(f"{name}.tiff")
    cfg = make_config({"slides": str(tmp_path / "slides" / "*.tiff"), "n_shards": 2}, labels=["s1", "s2", "s3"])
    assert tile_shard(cfg, "c", 0) == cfg.layout.tile_shard("c", "shard0000")
    tile_shard(cfg, "c", 1)
    assert shard_table(cfg, 0)["slide_id"].tolist() == ["s1", "s2"]
    assert shard_table(cfg, 1)["slide_id"].tolist() == ["s3"]

    tiles, meta = read_parquet(cfg.layout.tiles("c", "s1"), schema="tiles")
    assert list(tiles.columns) == ["x", "y", "level", "read_px", "tile_px", "mpp", "tissue"]
    assert (tiles["tissue"] >= 0.5).all() and (tiles[["level", "read_px", "tile_px"]].to_numpy() == [0, 128, 128]).all()
    # tissue is two ellipses left and right: no tile lies on the glass around them
    centre_x, centre_y = tiles["x"] + 64, tiles["y"] + 64
    left = ((centre_x / 2048 - 0.35) / 0.25) ** 2 + ((centre_y / 1536 - 0.5) / 0.35) ** 2
    right = ((centre_x / 2048 - 0.75) / 0.15) ** 2 + ((centre_y / 1536 - 0.5) / 0.3) ** 2
    assert (np.minimum(left, right) < 1.3).all() and len(tiles) > 40
    assert meta["vendor"] == "generic-tiff" and meta["dimensions"] == [2048, 1536]
    assert meta["level0_mpp"] == pytest.approx(0.5) and meta["mpp_source"] == "openslide"
    assert (meta["target_mpp"], meta["tile_px"], meta["stride_px"]) == (0.5, 128, 128)
    qc = Image.open(cfg.layout.qc("c", "s1"))
    assert qc.format == "PNG" and 300 < qc.width < 2000

    index_cohort(cfg, "c")
    index = read_parquet(cfg.layout.tile_index("c"), schema="tile_index")[0]
    assert index["slide_id"].tolist() == ["s1", "s2", "s3"] and (index["n_tiles"] > 0).all()
    skipped = read_parquet(cfg.layout.tile_skipped("c"), schema="skipped")[0]
    assert skipped.empty and {"slide_id", "path", "reason"} <= set(skipped.columns)


def test_rerun_reuses_tiles_unless_settings_changed(make_slide, make_config, tmp_path):
    make_slide("s1.tiff", **SMALL)
    glob = str(tmp_path / "slides" / "*.tiff")
    cfg = make_config({"slides": glob})
    tile_shard(cfg, "c", 0)
    tiles_file = cfg.layout.tiles("c", "s1")
    stamp = tiles_file.stat().st_mtime_ns
    tile_shard(cfg, "c", 0)
    assert tiles_file.stat().st_mtime_ns == stamp
    changed = make_config({"slides": glob}, max_tiles_per_slide=3)
    tile_shard(changed, "c", 0)
    assert tiles_file.stat().st_mtime_ns != stamp
    assert shard_table(changed)["n_tiles"].tolist() == [3]
    too_big = make_config({"slides": glob}, tile_px=1024, on_slide_error="skip")
    tile_shard(too_big, "c", 0)
    assert shard_table(too_big)["cause"].tolist() == ["no_tiles"]
    assert not tiles_file.exists()  # no stale tiles of the earlier settings beside a skipped row


def test_max_tiles_subsample_is_reproducible(make_slide, make_config, tmp_path):
    make_slide("s1.tiff")
    cfg = make_config({"slides": str(tmp_path / "slides" / "*.tiff")}, max_tiles_per_slide=5)
    tile_shard(cfg, "c", 0)
    first = read_parquet(cfg.layout.tiles("c", "s1"), schema="tiles")[0]
    os.remove(cfg.layout.tiles("c", "s1"))
    tile_shard(cfg, "c", 0)
    assert len(first) == 5 and first.equals(read_parquet(cfg.layout.tiles("c", "s1"), schema="tiles")[0])


# --------------------------------------------------------------------------- bad slides
def bad_cohort(case: str, make_slide, tmp_path: Path) -> dict:
    """A cohort with one good slide 'zz_good' and one bad slide of the given case."""
    folder = tmp_path / "slides"
    make_slide("zz_good.tiff", **SMALL)
    manifest_rows = None
    if case == "missing_file":
        manifest_rows = [("bad", str(folder / "nowhere.svs"))]
    elif case == "unsupported_format":
        (folder / "bad.tiff").write_text("a text file, not a slide")
    elif case == "unreadable":
        path = make_slide("bad.tiff", **SMALL)
        for level in range(3):  # whichever level the overview reads
            corrupt_tile(path, tile=0, level=level)
    elif case == "no_mpp":
        make_slide("bad.tiff", mpp=None, **SMALL)
    elif case == "implausible_mpp":
        make_slide("bad.tiff", dpi=72, **SMALL)
    elif case == "mpp_too_coarse":
        make_slide("bad.tiff", mpp=1.5, **SMALL)
    elif case == "no_tissue":
        make_slide("bad.tiff", width=768, height=512, ellipses=[])
    elif case == "no_tiles":
        make_slide("bad.tiff", width=100, height=100, ellipses=[(0.5, 0.5, 0.5, 0.5)])
    elif case == "duplicate_id":
        (folder / "copy").mkdir()
        make_slide("a.tiff", **SMALL)
        (folder / "a.tiff").rename(folder / "copy" / "bad.tiff")
        make_slide("bad.tiff", **SMALL)
        return {"slides": str(folder / "**" / "*.tiff")}
    elif case == "unsafe_id":
        manifest_rows = [("bad id", str(make_slide("bad.tiff", **SMALL)))]
    if manifest_rows is None:
        return {"slides": str(folder / "*.tiff")}
    manifest = tmp_path / "manifest.csv"
    rows = [*manifest_rows, ("zz_good", str(folder / "zz_good.tiff"))]
    pd.DataFrame(rows, columns=["slide_id", "path"]).to_csv(manifest, index=False)
    return {"manifest": str(manifest)}


BAD_CASES = ["missing_file", "unsupported_format", "unreadable", "no_mpp", "implausible_mpp",
             "mpp_too_coarse", "no_tissue", "no_tiles", "duplicate_id", "unsafe_id"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_slide_fails_naming_slide_cause_and_fix(case, make_slide, make_config, tmp_path):
    cfg = make_config(bad_cohort(case, make_slide, tmp_path))
    error = SlideError if case not in ("duplicate_id", "unsafe_id") else CohortError
    with pytest.raises(error) as info:
        tile_shard(cfg, "c", 0)
    message = str(info.value)
    assert "bad" in message and "on_slide_error: skip" in message
    if error is SlideError:
        assert isinstance(info.value, SlideError) and info.value.cause == case
        assert str(tmp_path) in message  # the file is named
    assert not cfg.layout.tile_shard("c", "shard0000").exists()


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_slide_is_skipped_and_recorded(case, make_slide, make_config, tmp_path):
    cfg = make_config(bad_cohort(case, make_slide, tmp_path), labels=["zz_good"], on_slide_error="skip")
    tile_shard(cfg, "c", 0)
    manifest = shard_table(cfg).set_index("slide_id")
    assert manifest.loc["zz_good", "status"] == "ok" and manifest.loc["zz_good", "n_tiles"] > 0
    bad = manifest[manifest["status"] == "skipped"]
    assert len(bad) == (2 if case == "duplicate_id" else 1)
    assert (bad["cause"] == case).all() and (bad["reason"].str.len() > 20).all()
    assert not any(cfg.layout.tiles("c", s).exists() for s in bad.index if "/" not in s)

    index_cohort(cfg, "c")
    assert read_parquet(cfg.layout.tile_index("c"), schema="tile_index")[0]["slide_id"].tolist() == ["zz_good"]
    skipped = read_parquet(cfg.layout.tile_skipped("c"), schema="skipped")[0]
    assert sorted(skipped["slide_id"]) == sorted(bad.index) and (skipped["cause"] == case).all()


def test_qc_picture_is_written_for_a_slide_without_tissue(make_slide, make_config, tmp_path):
    cfg = make_config(bad_cohort("no_tissue", make_slide, tmp_path), on_slide_error="skip")
    tile_shard(cfg, "c", 0)
    assert cfg.layout.qc("c", "bad").exists()
    assert "QC picture" in shard_table(cfg).set_index("slide_id").loc["bad", "reason"]


def test_index_reads_no_label_table(make_slide, make_config, tmp_path):
    """The cohort index depends on the shards only, not on label tables.

    Label tables are the experts' inputs, so editing one reruns the tasks that read it, not the
    whole cohort (their checks are in data/labels.py).
    """
    make_slide("s1.tiff", **SMALL)
    make_slide("s2.tiff", **SMALL)
    cfg = make_config({"slides": str(tmp_path / "slides" / "*.tiff")}, labels=["s1", "ghost"])
    tile_shard(cfg, "c", 0)
    for task in cfg.tasks:
        Path(task.labels).unlink(missing_ok=True)
    index_cohort(cfg, "c")
    index = read_parquet(cfg.layout.tile_index("c"), schema="tile_index")[0]
    assert index["slide_id"].tolist() == ["s1", "s2"]
    assert read_parquet(cfg.layout.tile_skipped("c"), schema="skipped")[0].empty


def test_empty_cohort_and_missing_manifest_are_errors(make_config, tmp_path):
    cfg = make_config({"slides": str(tmp_path / "nothing" / "*.svs")})
    with pytest.raises(CohortError, match="lists no slide files"):
        tile_shard(cfg, "c", 0)
    with pytest.raises(FileNotFoundError, match="shard manifest missing"):
        index_cohort(cfg, "c")

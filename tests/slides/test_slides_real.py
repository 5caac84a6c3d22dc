"""The stage on real slides (../shared/data/slides) and on slides of the demo's renderer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from support.slides import SHARED_SLIDES, needs_shared

from pathfuse.io import read_parquet
from pathfuse.slides.errors import SlideError
from pathfuse.slides.reader import SlideReader
from pathfuse.slides.tiling import tile_shard


def one_slide_cohort(tmp_path, name: str, overrides: dict[str, float] | None = None) -> dict:
    path = needs_shared(name)
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame({"slide_id": [path.stem], "path": [str(path)]}).to_csv(manifest, index=False)
    cohort = {"manifest": str(manifest)}
    if overrides:
        table = tmp_path / "mpp.csv"
        pd.DataFrame({"slide_id": list(overrides), "mpp": list(overrides.values())}).to_csv(table, index=False)
        cohort["mpp_overrides"] = str(table)
    return cohort


def test_real_aperio_svs_tiles_at_its_stated_mpp(make_config, tmp_path):
    cfg = make_config(one_slide_cohort(tmp_path, "CMU-1-Small-Region.svs"), tile_px=256)
    tile_shard(cfg, "c", 0)
    tiles, meta = read_parquet(cfg.layout.tiles("c", "CMU-1-Small-Region"), schema="tiles")
    assert meta["vendor"] == "aperio" and meta["mpp_source"] == "openslide"
    assert meta["level0_mpp"] == pytest.approx(0.499) and meta["dimensions"] == [2220, 2967]
    assert 15 <= len(tiles) <= 60 and (tiles["tissue"] >= 0.5).all()
    assert (tiles["read_px"] == 256).all()  # 0.499 vs 0.5: read as is, no resampling
    reader = SlideReader(meta["path"])
    row = tiles.iloc[len(tiles) // 2]
    tile = reader.read_tile(row.x, row.y, row.level, row.read_px, row.tile_px)
    assert tile.shape == (256, 256, 3) and tile.std() > 15  # tissue texture, not glass


@pytest.mark.parametrize("mode", ["fail", "skip"])
def test_72_dpi_tiff_is_refused_without_an_override(mode, make_config, tmp_path):
    cfg = make_config(one_slide_cohort(tmp_path, "boxes.tiff"), on_slide_error=mode)
    if mode == "fail":
        with pytest.raises(SlideError, match=r"352\.8.*mpp_overrides") as info:
            tile_shard(cfg, "c", 0)
        assert info.value.cause == "implausible_mpp" and "boxes.tiff" in str(info.value)
    else:
        tile_shard(cfg, "c", 0)
        row = read_parquet(cfg.layout.tile_shard("c", "shard0000"), schema="tile_shard")[0].iloc[0]
        assert (row["status"], row["cause"]) == ("skipped", "implausible_mpp")


def test_72_dpi_tiff_tiles_with_an_override(make_config, tmp_path):
    cfg = make_config(one_slide_cohort(tmp_path, "boxes.tiff", {"boxes": 2.0}), target_mpp=2.0, tile_px=64)
    tile_shard(cfg, "c", 0)
    tiles, meta = read_parquet(cfg.layout.tiles("c", "boxes"), schema="tiles")
    assert meta["mpp_source"] == "override" and meta["level0_mpp"] == 2.0
    assert len(tiles) >= 4 and (tiles["level"] == 0).all()


def test_16_px_slide_gives_zero_tiles(make_config, tmp_path):
    cfg = make_config(one_slide_cohort(tmp_path, "small.svs"), on_slide_error="skip")
    tile_shard(cfg, "c", 0)
    row = read_parquet(cfg.layout.tile_shard("c", "shard0000"), schema="tile_shard")[0].iloc[0]
    assert (row["status"], row["cause"]) == ("skipped", "no_tiles")
    assert "smaller than one tile" in row["reason"] and cfg.layout.qc("c", "small").exists()


def test_whole_real_folder_as_a_glob_cohort(make_config, tmp_path):
    if not SHARED_SLIDES.is_dir():
        pytest.skip(f"real slides {SHARED_SLIDES} absent (../shared is not part of a fresh clone)")
    cfg = make_config({"slides": str(SHARED_SLIDES / "*")}, on_slide_error="skip", tile_px=256)
    tile_shard(cfg, "c", 0)
    manifest = read_parquet(cfg.layout.tile_shard("c", "shard0000"), schema="tile_shard")[0]
    assert dict(zip(manifest["slide_id"], manifest["cause"], strict=True)) == {
        "CMU-1-Small-Region": "", "boxes": "implausible_mpp", "small": "no_tiles"}


@pytest.mark.parametrize("aperio", [True, False])
def test_demo_renderer_slides_tile(aperio, make_config, tmp_path):
    demo = pytest.importorskip("pathfuse.demo.slides", reason="demo slide renderer not available")
    path = tmp_path / "slides" / "demo-01.tiff"
    path.parent.mkdir()
    levels = demo.render_slide(np.random.default_rng(3), 1024, 1024, 0.25, demo.TissueLook(tissue_fraction=0.8))
    demo.write_pyramid_tiff(path, levels, 0.25, 80, aperio)
    cfg = make_config({"slides": str(path.parent / "*.tiff")}, tile_px=256, min_tissue=0.25)
    tile_shard(cfg, "c", 0)
    tiles, meta = read_parquet(cfg.layout.tiles("c", "demo-01"), schema="tiles")
    assert meta["vendor"] == ("aperio" if aperio else "generic-tiff")
    assert meta["level0_mpp"] == pytest.approx(0.25) and len(tiles) >= 1
    assert (tiles["level"] == 1).all() and (tiles["read_px"] == 256).all()  # level 1 is 0.5 µm/px

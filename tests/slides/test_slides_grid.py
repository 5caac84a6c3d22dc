"""Tissue segmentation and the tile grid (level choice, positions, tissue fraction)."""

from __future__ import annotations

import numpy as np
import pytest
from support.slides import synthetic_image

from pathfuse.config import section_settings
from pathfuse.settings import TilingSettings
from pathfuse.slides.errors import SlideError
from pathfuse.slides.grid import grid_positions, locate_tiles, plan_grid, tissue_fractions
from pathfuse.slides.tissue import TissueMask, otsu_threshold, segment_tissue

SETTINGS = section_settings(TilingSettings)


def test_otsu_splits_two_populations():
    values = np.concatenate([np.full(500, 5), np.full(300, 120)]).astype(np.uint8)
    assert 5 <= otsu_threshold(np.bincount(values, minlength=256)) < 120


def test_segmentation_finds_the_tissue_ellipse():
    rgb = synthetic_image(400, 300, [(0.5, 0.5, 0.3, 0.3)])
    tissue = segment_tissue(rgb, (16.0, 16.0), 0.5, SETTINGS)
    yy, xx = np.mgrid[0:300, 0:400]
    truth = ((xx / 400 - 0.5) / 0.3) ** 2 + ((yy / 300 - 0.5) / 0.3) ** 2 <= 1
    iou = (tissue.mask & truth).sum() / (tissue.mask | truth).sum()
    assert iou > 0.95
    assert tissue.mpp == 8.0
    assert tissue.area_mm2 == pytest.approx(truth.sum() * 0.008**2, rel=0.05)


def test_blank_glass_is_not_tissue_even_with_otsu():
    rng = np.random.default_rng(0)
    glass = np.clip(240 + rng.normal(0, 4, (300, 400, 3)), 0, 255).astype(np.uint8)
    assert not segment_tissue(glass, (16.0, 16.0), 0.5, SETTINGS).mask.any()


def test_small_holes_filled_small_objects_dropped():
    rgb = synthetic_image(400, 300, [(0.5, 0.5, 0.3, 0.3), (0.05, 0.05, 0.01, 0.01)])
    rgb[145:150, 195:200] = (242, 240, 244)  # 5x5 px hole = 0.0016 mm² at 8 µm/px
    tissue = segment_tissue(rgb, (16.0, 16.0), 0.5, section_settings(TilingSettings, median_px=1, closing_um=0))
    assert tissue.mask[147, 197]
    assert not tissue.mask[:30, :30].any()  # the 8x6 px speck is under min_object_mm2
    keep_all = section_settings(TilingSettings, median_px=1, closing_um=0, min_object_mm2=0, max_hole_mm2=0)
    kept = segment_tissue(rgb, (16.0, 16.0), 0.5, keep_all)
    assert kept.mask[:30, :30].any() and not kept.mask[147, 197]


def test_fixed_threshold_is_used_as_given():
    rgb = synthetic_image(100, 100, [(0.5, 0.5, 0.3, 0.3)])
    assert segment_tissue(rgb, (16.0, 16.0), 0.5, section_settings(TilingSettings, threshold=255)).mask.sum() == 0
    assert segment_tissue(rgb, (16.0, 16.0), 0.5, section_settings(TilingSettings, threshold=20)).threshold == 20


@pytest.mark.parametrize("mpp0, target, level, read_px", [
    (0.25, 0.5, 1, 256),   # exact level
    (0.25, 1.0, 2, 256),
    (0.25, 0.75, 1, 384),  # between levels: read finer, resize down
    (0.499, 0.5, 0, 256),  # within 1%: read tile_px, no resampling
    (0.263, 0.25, 0, 243),  # slightly coarser slide: small upsampling allowed
])
def test_grid_plan_reads_the_best_level(mpp0, target, level, read_px):
    plan = plan_grid((1.0, 2.0, 4.0, 8.0), mpp0, section_settings(TilingSettings, target_mpp=target))
    assert (plan.level, plan.read_px) == (level, read_px)
    assert plan.size0 >= 256 * target / mpp0 - 1e-9


def test_too_coarse_slide_is_refused():
    with pytest.raises(SlideError, match="coarser than the target") as info:
        plan_grid((1.0,), 0.5, section_settings(TilingSettings, target_mpp=0.25))
    assert info.value.cause == "mpp_too_coarse"


def test_grid_stays_inside_the_slide_and_honours_stride():
    plan = plan_grid((1.0,), 0.25, section_settings(TilingSettings, tile_px=100, stride_px=50))
    xs, ys = grid_positions((1000, 450), plan)
    assert xs.max() + plan.size0 <= 1000 and ys.max() + plan.size0 <= 450
    assert sorted(set(np.diff(np.unique(xs)))) == [100]  # 50 px at 0.5 µm/px = 100 level-0 px
    assert len(np.unique(xs)) == 9 and len(np.unique(ys)) == 3
    assert grid_positions((150, 150), plan)[0].size == 0


def test_tissue_fraction_matches_brute_force():
    rng = np.random.default_rng(1)
    mask = rng.random((60, 80)) < 0.3
    tissue = TissueMask(mask=mask, scale=(4.0, 4.0), threshold=0, mpp=2.0)
    xs, ys = np.array([0, 40, 200]), np.array([0, 80, 160])
    got = tissue_fractions(tissue, xs, ys, 32.0)
    want = [mask[y // 4:(y + 32) // 4, x // 4:(x + 32) // 4].mean() for x, y in zip(xs, ys, strict=True)]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_subsampling_is_seeded_and_keeps_order():
    mask = np.ones((100, 100), bool)
    tissue = TissueMask(mask=mask, scale=(16.0, 16.0), threshold=0, mpp=8.0)
    settings = section_settings(TilingSettings, tile_px=512, max_tiles_per_slide=10)
    plan = plan_grid((1.0,), 0.5, settings)
    first, n_grid = locate_tiles((1600, 1600), plan, tissue, settings, np.random.default_rng(7))
    assert n_grid == 9 and len(first) == 9  # fewer tiles than the cap: all kept
    settings = section_settings(TilingSettings, tile_px=512, max_tiles_per_slide=3)
    first, _ = locate_tiles((1600, 1600), plan, tissue, settings, np.random.default_rng(7))
    again, _ = locate_tiles((1600, 1600), plan, tissue, settings, np.random.default_rng(7))
    other, _ = locate_tiles((1600, 1600), plan, tissue, settings, np.random.default_rng(8))
    assert len(first) == 3 and first.equals(again) and not first.equals(other)
    assert (np.diff(first["y"] * 10_000 + first["x"]) > 0).all()
    assert first.dtypes.to_dict() == {"x": "int64", "y": "int64", "level": "int32", "read_px": "int32",
                                      "tile_px": "int32", "mpp": "float64", "tissue": "float32"}

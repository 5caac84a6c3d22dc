"""Reader and mpp resolution on real OpenSlide reads of synthetic and real slides."""

from __future__ import annotations

import pickle

import numpy as np
import openslide
import pytest
import tifffile
from support.slides import corrupt_tile, needs_shared

from pathfuse.slides.errors import SlideError
from pathfuse.slides.mpp import resolve_mpp
from pathfuse.slides.reader import SlideReader, level_for_downsample, open_slide
from pathfuse.slides.readers.base import StoredResolution, positive_number

RANGE = (0.1, 2.0)


def resolve(props, override=None, allow=False):
    keys = ("mpp-x", "mpp-y", "objective-power")
    stored = StoredResolution(*(positive_number(props, f"openslide.{k}") for k in keys))
    return resolve_mpp(stored, source="openslide", override=override, allow_objective_power=allow, mpp_range=RANGE,
                       fix="FIX-HINT")


def test_mpp_resolution_order():
    props = {"openslide.mpp-x": "0.2520", "openslide.mpp-y": "0.2521", "openslide.objective-power": "40"}
    assert resolve(props, override=0.3) == (0.3, "override")
    mpp, source = resolve(props)
    assert source == "openslide" and mpp == pytest.approx(0.25205)
    assert resolve({"openslide.objective-power": "20"}, allow=True) == (0.5, "objective_power")


def test_missing_mpp_names_the_override_and_the_objective_power_switch():
    with pytest.raises(SlideError, match=r"FIX-HINT.*allow_objective_power") as info:
        resolve({"openslide.objective-power": "20"})
    assert info.value.cause == "no_mpp"
    with pytest.raises(SlideError, match="no resolution") as info:
        resolve({"openslide.mpp-x": "not a number"}, allow=True)
    assert info.value.cause == "no_mpp"


def test_implausible_mpp_is_refused_unless_overridden():
    props = {"openslide.mpp-x": "352.77777", "openslide.mpp-y": "352.77777"}
    with pytest.raises(SlideError, match=r"72-dpi.*FIX-HINT") as info:
        resolve(props)
    assert info.value.cause == "implausible_mpp"
    assert resolve(props, override=0.5) == (0.5, "override")
    with pytest.raises(SlideError, match="non-square"):
        resolve({"openslide.mpp-x": "0.25", "openslide.mpp-y": "0.5"})


def test_level_choice_never_coarser_than_wanted():
    downsamples = (1.0, 2.0, 4.016, 8.03)
    assert level_for_downsample(downsamples, 1.0) == 0
    assert level_for_downsample(downsamples, 3.9) == 1
    assert level_for_downsample(downsamples, 4.0) == 2  # within the 1% tolerance
    assert level_for_downsample(downsamples, 100) == 3
    assert level_for_downsample(downsamples, 0.5) == 0


def test_read_tile_matches_openslide_and_resizes(make_slide):
    path = make_slide("a.tiff")
    reader = SlideReader(path)
    tile = reader.read_tile(512, 384, 0, 256, 256)
    assert tile.shape == (256, 256, 3) and tile.dtype == np.uint8 and tile.flags.writeable
    direct = np.asarray(openslide.OpenSlide(str(path)).read_region((512, 384), 0, (256, 256)))[..., :3]
    np.testing.assert_array_equal(tile, direct)
    small = reader.read_tile(512, 384, 1, 128, 64)
    assert small.shape == (64, 64, 3)
    assert abs(small.mean() - tile.mean()) < 8  # same region, coarser level


def test_reader_pickles_without_its_handle_and_reopens(make_slide):
    path = make_slide("a.tiff")
    reader = SlideReader(path)
    first = reader.read_tile(0, 0, 0, 64, 64)
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._slide is None
    np.testing.assert_array_equal(clone.read_tile(0, 0, 0, 64, 64), first)


def test_area_outside_the_slide_reads_as_white_background(make_slide):
    path = make_slide("a.tiff", width=512, height=512, ellipses=[])
    tile = SlideReader(path).read_tile(448, 448, 0, 128, 128)
    assert (tile[-32:, -32:] == 255).all()  # beyond the 512 px edge: transparent → white
    assert (tile[:32, :32] < 250).any()


def test_overview_is_bounded_and_scaled(make_slide):
    path = make_slide("a.tiff", width=2000, height=1000)
    overview, (sx, sy) = SlideReader(path).overview(16)
    assert overview.shape == (62, 125, 3)
    assert sx == pytest.approx(2000 / 125) and sy == pytest.approx(1000 / 62)


def test_open_errors_name_file_and_cause(tmp_path, make_slide):
    with pytest.raises(SlideError, match="no such file") as info:
        open_slide(tmp_path / "none.svs")
    assert info.value.cause == "missing_file"
    text = tmp_path / "notes.svs"
    text.write_text("not a slide")
    with pytest.raises(SlideError, match="not a whole-slide format") as info:
        open_slide(text)
    assert info.value.cause == "unsupported_format" and str(text) in str(info.value)
    stripped = tmp_path / "stripped.tif"
    tifffile.imwrite(stripped, np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(SlideError, match="TIFF without tiles") as info:
        open_slide(stripped)
    assert info.value.cause == "unsupported_format"
    good = make_slide("t.tiff")
    truncated = tmp_path / "truncated.tiff"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    with pytest.raises(SlideError, match="truncated or damaged") as info:
        open_slide(truncated)
    assert info.value.cause == "unreadable" and str(truncated) in str(info.value)


def test_damaged_tile_data_fails_the_read_naming_the_file(make_slide):
    path = corrupt_tile(make_slide("c.tiff"), tile=10)
    reader = SlideReader(path)
    reader.read_tile(0, 0, 0, 256, 256)  # intact tiles still read
    with pytest.raises(SlideError, match="damaged") as info:
        reader.read_tile(512, 256, 0, 256, 256)  # tile 10 of the 8-tile-wide level 0
    assert info.value.cause == "unreadable" and str(path) in str(info.value)


def test_real_svs_tile_equals_openslide_read():
    path = needs_shared("CMU-1-Small-Region.svs")
    tile = SlideReader(path).read_tile(1000, 1200, 0, 224, 224)
    direct = np.asarray(openslide.OpenSlide(str(path)).read_region((1000, 1200), 0, (224, 224)))[..., :3]
    np.testing.assert_array_equal(tile, direct)
    assert tile.std() > 10  # real tissue, not background

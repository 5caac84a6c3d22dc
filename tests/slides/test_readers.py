"""The reader seam: registry and ``auto`` choice, the JPEG-native reader's edge cases, a toy reader."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import tifffile
from PIL import Image
from support.slides import psnr, write_svs

from pathfuse.config import Config, ConfigError
from pathfuse.slides import readers
from pathfuse.slides.errors import SlideError
from pathfuse.slides.reader import SlideReader
from pathfuse.slides.readers import jpeg as jpeg_module
from pathfuse.slides.readers.base import RawTileSource, SlideSource, StoredResolution, read_overview
from pathfuse.slides.readers.jpeg import JpegTiffReader
from pathfuse.slides.readers.jpeg_codec import complete_stream, decode


def _jfif(value: int, side: int = 256) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((side, side, 3), value, np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_auto_picks_jpeg_only_for_jpeg_tiled_aperio_and_generic_tiffs(tmp_path, make_slide):
    assert readers.choose_reader(write_svs(tmp_path / "a.svs", side=2000), "auto") == "jpeg"
    assert readers.choose_reader(make_slide("g.tiff"), "auto") == "jpeg"
    image = np.zeros((512, 512, 3), np.uint8)
    tifffile.imwrite(tmp_path / "strips.tif", image)
    tifffile.imwrite(tmp_path / "deflate.tif", image, tile=(256, 256), compression="zlib")
    tifffile.imwrite(tmp_path / "bif.tif", image, tile=(256, 256), compression="jpeg", software="Ventana Image Server",
                     extratags=[(700, 1, 8, b"<iScan/>", True)], metadata=None)  # overlapping tiles: OpenSlide's job
    (tmp_path / "slide.mrxs").write_text("MIRAX index")
    for name in ("strips.tif", "deflate.tif", "bif.tif", "slide.mrxs", "missing.svs"):
        assert readers.choose_reader(tmp_path / name, "auto") == "openslide", name
    assert readers.choose_reader(tmp_path / "deflate.tif", "jpeg") == "jpeg"  # a named reader is obeyed…
    with pytest.raises(SlideError, match=r"jpeg reader cannot read it.*not JPEG") as info:
        _ = readers.open_reader(tmp_path / "deflate.tif", "jpeg").dimensions  # …and says why it cannot
    assert info.value.cause == "unsupported_format"
    with pytest.raises(KeyError, match="unknown slide reader 'cucim'; known: auto, jpeg, openslide"):
        readers.choose_reader(tmp_path / "a.svs", "cucim")


@pytest.mark.parametrize("kind", ["svs_240", "svs_odd", "generic"])
def test_jpeg_reader_describes_the_slide_as_openslide_does(kind, tmp_path, make_slide):
    path = (make_slide("g.tiff", width=2000, height=1100) if kind == "generic" else
            write_svs(tmp_path / "s.svs", side=4100 if kind == "svs_odd" else 4000, min_level_px=200))
    ours, theirs = JpegTiffReader(path), SlideReader(path)
    assert isinstance(ours, SlideSource) and isinstance(ours, RawTileSource) and not isinstance(theirs, RawTileSource)
    assert ours.vendor == theirs.vendor == ("generic-tiff" if kind == "generic" else "aperio")
    assert ours.level_dimensions == theirs.level_dimensions and ours.level_count == theirs.level_count
    np.testing.assert_allclose(ours.level_downsamples, theirs.level_downsamples, rtol=1e-12)
    assert ours.resolution == pytest.approx(theirs.resolution)
    overview, scale = read_overview(ours, 16)
    reference, ref_scale = read_overview(theirs, 16)
    assert scale == ref_scale and psnr(overview, reference) > 40


def test_aperio_rgb_encoded_tiles_need_the_colour_rule(tmp_path):
    path = write_svs(tmp_path / "s.svs", side=2000)
    tile = JpegTiffReader(path).read_tile(960, 960, 0, 480, 480)
    np.testing.assert_array_equal(tile, SlideReader(path).read_tile(960, 960, 0, 480, 480))  # bit-exact at scale 1
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        offset, count, tables = page.dataoffsets[40], page.databytecounts[40], page.jpegtables
    assert tables is not None  # a JPEG-compressed SVS page shares its tables
    with open(path, "rb") as fh:
        fh.seek(offset)
        raw = fh.read(count)
    right = decode(complete_stream(raw, tables, rgb_encoded=True), 1)
    wrong = decode(complete_stream(raw, tables, rgb_encoded=False), 1)  # what a YCbCr guess gives
    assert psnr(right, wrong) < 20  # the rule matters: without it the colours are far off


def test_absent_tiles_and_areas_outside_the_level_read_as_white(tmp_path):
    path = tmp_path / "sparse.tiff"
    with tifffile.TiffWriter(path) as tif:  # tile 1 has byte count 0 (as Philips/Ventana exports have)
        tif.write(iter([_jfif(100), b"", _jfif(150), _jfif(200)]), shape=(500, 500, 3), dtype=np.uint8,
                  tile=(256, 256), compression="jpeg", photometric="rgb", metadata=None)
    ours, theirs = JpegTiffReader(path), SlideReader(path)
    for read in [(0, 0, 0, 500, 500), (384, 384, 0, 256, 256), (0, 0, 0, 512, 256)]:
        tile = ours.read_tile(*read)
        np.testing.assert_array_equal(tile, theirs.read_tile(*read))
    full = ours.read_tile(0, 0, 0, 512, 512)
    assert (full[:256, 256:500] == 255).all() and (full[500:] == 255).all() and (full[:, 500:] == 255).all()
    assert (full[300, 100] == 150).all()


def test_damaged_tile_fails_naming_the_file(make_slide):
    from support.slides import corrupt_tile

    path = corrupt_tile(make_slide("c.tiff"), tile=10)
    reader = JpegTiffReader(path)
    reader.read_tile(0, 0, 0, 256, 256)
    with pytest.raises(SlideError, match=r"cannot be decoded.*damaged") as info:
        reader.read_tile(512, 256, 0, 256, 256)
    assert info.value.cause == "unreadable" and str(path) in str(info.value)


def test_reader_pickles_without_handle_and_bounds_its_cache(tmp_path, monkeypatch):
    path = write_svs(tmp_path / "s.svs", side=2000, tile=256)
    reader = JpegTiffReader(path)
    first = reader.read_tile(512, 512, 0, 512, 256)
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._fd is None and not clone._cache
    np.testing.assert_array_equal(clone.read_tile(512, 512, 0, 512, 256), first)
    monkeypatch.setattr(jpeg_module, "CACHE_BYTES", 3 * 128 * 128 * 3)
    for x in range(0, 1536, 512):
        clone.read_tile(x, 0, 0, 512, 256)
    assert len(clone._cache) == 3 and clone._cache_bytes <= jpeg_module.CACHE_BYTES
    clone.close()
    assert clone._fd is None and not clone._cache


class ArrayReader:
    """A toy reader over a NumPy image: the whole contract a new reader has to meet."""

    name = "array"
    vendor = "numpy"
    level_count = 1
    level_downsamples = (1.0,)
    resolution = StoredResolution(0.5, 0.5, None)
    def __init__(self, path):
        self.properties: dict[str, str] = {}
        self.path = path
        self.image = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
        self.dimensions = (400, 300)
        self.level_dimensions = ((400, 300),)

    def read_region(self, x, y, level, width, height):
        out = np.full((height, width, 3), 255, np.uint8)
        part = self.image[y:y + height, x:x + width]
        out[:part.shape[0], :part.shape[1]] = part
        return out

    def read_tile(self, x, y, level, read_px, out_px):
        return np.asarray(Image.fromarray(self.read_region(x, y, level, read_px, read_px)).resize((out_px, out_px)))

    def close(self):
        pass


def test_a_toy_reader_plugs_in_through_the_registry(monkeypatch):
    monkeypatch.setattr(readers, "_READERS", dict(readers._READERS))
    readers.register("array", ArrayReader)
    with pytest.raises(KeyError, match="registered twice"):
        readers.register("array", ArrayReader)
    reader = readers.open_reader("any.npy", "array")
    assert isinstance(reader, SlideSource) and reader.read_tile(0, 0, 0, 64, 32).shape == (32, 32, 3)
    overview, scale = read_overview(reader, 4)
    assert overview.shape == (75, 100, 3) and scale == (4.0, 4.0)


def test_config_names_a_registered_reader_only(monkeypatch, demo_raw):
    """The run config and a cohort may name a plug-in reader once it is registered, not before."""
    monkeypatch.setattr(readers, "_READERS", dict(readers._READERS))
    raw = {**demo_raw, "embedding": {"reader": "array"}}
    raw["cohorts"] = {name: {**entry, "reader": "array"} for name, entry in demo_raw["cohorts"].items()}
    with pytest.raises(ConfigError, match="'array' is not allowed"):
        Config.from_dict(raw)
    readers.register("array", ArrayReader)
    cfg = Config.from_dict(raw)
    assert cfg.settings.embedding.reader == "array"


def test_an_installed_reader_registers_through_its_entry_point(monkeypatch):
    """A lab's package declares ``[project.entry-points."pathfuse.readers"] name = "module:Class"``."""
    import importlib
    from importlib.metadata import EntryPoint

    plugin = EntryPoint(name="lab_reader", value="slides.test_readers:ArrayReader", group="pathfuse.readers")
    monkeypatch.setattr("importlib.metadata.entry_points",
                        lambda group: [plugin] if group == "pathfuse.readers" else [])
    try:
        reloaded = importlib.reload(readers)
        assert "lab_reader" in reloaded.names()
        assert reloaded._READERS["lab_reader"] == "slides.test_readers:ArrayReader"  # imported on first use
    finally:
        monkeypatch.undo()
        importlib.reload(readers)

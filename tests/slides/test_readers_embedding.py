"""The reader setting in the embedding stage: recorded per feature file, one per cohort, GPU assembly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors import safe_open
from support.encoders import make_cohort, make_config
from support.slides import write_svs

from pathfuse.encoders.extract import embed_shard
from pathfuse.encoders.slide_tiles import MixedReadersError, reader_setting
from pathfuse.encoders.transforms import ResizeCrop
from pathfuse.slides.readers.jpeg import JpegTiffReader
from pathfuse.slides.readers.jpeg_codec import decode


def _meta(path):
    with safe_open(str(path), framework="np") as fh:
        return fh.get_tensor("features"), fh.metadata()


def test_feature_files_say_which_reader_made_them_and_a_cohort_keeps_one(tmp_path):
    cfg = make_config(tmp_path, embedding={"reader": "openslide"})
    ids = make_cohort(cfg, tmp_path)
    embed_shard(cfg, "demo_vit_a", "demo", 0)
    first = {s: _meta(cfg.layout.features("demo_vit_a", "demo", s)) for s in ids}
    assert {m["reader"] for _, m in first.values()} == {"openslide"}
    assert {m["reader_setting"] for _, m in first.values()} == {"openslide"}

    cfg.layout.features("demo_vit_a", "demo", ids[1]).unlink()
    jpeg = make_config(tmp_path, embedding={"reader": "auto"})
    with pytest.raises(MixedReadersError, match=r"'auto'.*openslide: 1 file.*allow_mixed_readers"):
        embed_shard(jpeg, "demo_vit_a", "demo", 0)
    forced = make_config(tmp_path, embedding={"reader": "auto", "allow_mixed_readers": True})
    embed_shard(forced, "demo_vit_a", "demo", 0)
    feats, meta = _meta(cfg.layout.features("demo_vit_a", "demo", ids[1]))
    assert (meta["reader"], meta["reader_setting"]) == ("jpeg", "auto")
    np.testing.assert_array_equal(feats, first[ids[1]][0])  # scale-1 reads: the same pixels, the same features


def test_cohort_reader_overrides_the_embedding_setting(tmp_path):
    cfg = make_config(tmp_path, embedding={"reader": "jpeg"},
                      cohorts={"demo": {"slides": str(tmp_path / "*.tiff"), "reader": "openslide"},
                               "other": {"slides": str(tmp_path / "*.svs")}})
    assert reader_setting(cfg, "demo") == "openslide" and reader_setting(cfg, "other") == "jpeg"


@pytest.fixture
def fake_nvjpeg(monkeypatch):
    """torchvision.io.decode_jpeg stand-in (CPU torch here has no image ops): Pillow, list in, list out."""
    from pathfuse.compat import import_timm

    import_timm()  # makes torchvision importable with the CPU torch
    import torchvision.io

    calls = []

    def decode_jpeg(data, mode=None, device="cpu"):
        streams = data if isinstance(data, list) else [data]
        calls.append(len(streams))
        out = []
        for stream in streams:
            raw = bytes(stream.numpy())
            if raw.endswith(b"BAD"):
                raise RuntimeError("nvjpeg: bad stream")
            out.append(torch.from_numpy(decode(raw, 1).copy()).permute(2, 0, 1))
        return out if isinstance(data, list) else out[0]

    monkeypatch.setattr(torchvision.io, "decode_jpeg", decode_jpeg)
    return calls


def test_gpu_decode_path_assembles_what_the_cpu_reader_reads(tmp_path, fake_nvjpeg):
    from pathfuse.encoders.gpu_decode import GpuJpegDecoder

    reader = JpegTiffReader(write_svs(tmp_path / "s.svs", side=3000))
    geometry = ResizeCrop(resize_px=224, crop_px=224)
    reads = [(1000, 1000, 0, 512, 256), (1008, 1504, 0, 464, 224), (2800, 2800, 0, 256, 256), (960, 960, 0, 240, 240)]
    payloads = [reader.raw_region(*r) for r in reads]
    decoder = GpuJpegDecoder(torch.device("cpu"), geometry)
    images, ok = decoder(payloads)
    assert ok.all() and images.shape == (4, 3, 224, 224) and images.dtype == torch.uint8
    assert decoder.rgb_on_gpu is True  # the colour check ran on the first RGB-encoded stream
    for image, read in zip(images, reads, strict=True):
        expected = geometry(reader.read_tile(*read)).float()
        assert (image.float() - expected).abs().mean() < 1.0  # same steps, rounding aside

    first = payloads[0].streams[0]
    assert first is not None  # the region's first tile lies inside the slide
    damaged = first[:-2] + b"BAD"  # nvJPEG refuses it, and so does the CPU fallback
    broken = type(payloads[0])(**{**payloads[0].__dict__, "streams": (damaged, *payloads[0].streams[1:])})
    images, ok = decoder([broken, payloads[1], geometry(reader.read_tile(*reads[2]))])
    assert ok.tolist() == [False, True, True] and images[0].sum() == 0
    n = len(broken.streams) + len(payloads[1].streams)
    assert fake_nvjpeg[-n - 1:] == [n] + [1] * n  # the batch call failed, then stream by stream

"""Stage entry embed_shard: real pyramidal TIFFs read by OpenSlide, a tiny timm encoder, real files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from safetensors import safe_open
from support.encoders import make_cohort, make_config, write_tile_shard

from pathfuse.encoders.extract import embed_shard
from pathfuse.encoders.slide_tiles import TileReadError
from pathfuse.io import read_parquet, write_parquet


def _features(path):
    with safe_open(str(path), framework="np") as fh:
        return fh.get_tensor("features"), fh.get_tensor("coords"), fh.metadata()


def test_shard_is_embedded_end_to_end(tmp_path):
    cfg = make_config(tmp_path, embedding={"num_workers": 1})
    ids = make_cohort(cfg, tmp_path)
    out = embed_shard(cfg, "demo_vit_c", "demo", 0)
    assert out == cfg.layout.feature_shard("demo_vit_c", "demo", "shard0000")
    manifest, meta = read_parquet(out, schema="feature_shard")
    assert manifest["slide_id"].tolist() == [*ids, "zz_broken"]
    assert manifest["status"].tolist() == ["ok", "ok", "skipped"]
    assert manifest["reason"].iloc[2].startswith("missing_file")
    assert manifest["n_tiles"].tolist() == [7, 9, 0] and manifest["dim"].tolist() == [128] * 3
    for slide_id, n in zip(ids, (7, 9), strict=True):
        tiles, _ = read_parquet(cfg.layout.tiles("demo", slide_id), schema="tiles")
        feats, coords, fmeta = _features(cfg.layout.features("demo_vit_c", "demo", slide_id))
        assert feats.dtype == np.float16 and feats.shape == (n, 128) and np.isfinite(feats).all()
        assert coords.dtype == np.int64 and (coords == tiles[["x", "y"]].to_numpy()).all()
        assert fmeta["encoder"] == "demo_vit_c" and fmeta["weights_sha256"] == meta["weights_sha256"]
        assert fmeta["mpp"] == "0.5" and fmeta["tile_px"] == "256" and fmeta["schema_version"] == "1"
        assert {"code_version", "slide_id", "precision"} <= set(fmeta)
        assert len(np.unique(feats, axis=0)) == n  # every tile got its own embedding


def test_outputs_are_bitwise_identical_across_runs(tmp_path):
    first = make_config(tmp_path / "a")
    second = make_config(tmp_path / "b", embedding={"num_workers": 1})  # workers must not change numbers
    for cfg in (first, second):
        make_cohort(cfg, tmp_path / "a")  # same slide files, separate results
        embed_shard(cfg, "demo_vit_a", "demo", 0)
    for slide_id in ("slide0", "slide1"):
        a = _features(first.layout.features("demo_vit_a", "demo", slide_id))
        b = _features(second.layout.features("demo_vit_a", "demo", slide_id))
        assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes() and a[2] == b[2]


def test_rerun_skips_finished_slides_and_redoes_missing_ones(tmp_path):
    cfg = make_config(tmp_path)
    make_cohort(cfg, tmp_path)
    embed_shard(cfg, "demo_vit_b", "demo", 0)
    done = cfg.layout.features("demo_vit_b", "demo", "slide0")
    redo = cfg.layout.features("demo_vit_b", "demo", "slide1")
    stamp = done.stat().st_mtime_ns
    reference = _features(redo)[0]
    redo.unlink()
    manifest, meta = read_parquet(embed_shard(cfg, "demo_vit_b", "demo", 0), schema="feature_shard")
    assert done.stat().st_mtime_ns == stamp and meta["n_resumed"] == 1
    assert _features(redo)[0].tobytes() == reference.tobytes()
    assert manifest["status"].tolist() == ["ok", "ok", "skipped"]
    # all done: no model is loaded, the manifest is rewritten from the files
    manifest2, meta2 = read_parquet(embed_shard(cfg, "demo_vit_b", "demo", 0), schema="feature_shard")
    assert meta2["n_resumed"] == 2 and "weights_sha256" not in meta2
    assert manifest2.equals(manifest)


@pytest.mark.parametrize("policy", ["drop", "zero"])
def test_corrupt_tile_is_logged_and_dropped_or_zero_filled(tmp_path, caplog, policy):
    cfg = make_config(tmp_path, embedding={"on_tile_error": policy, "max_tile_error_fraction": 0.5})
    make_cohort(cfg, tmp_path, corrupt=True)
    manifest, _ = read_parquet(embed_shard(cfg, "demo_vit_a", "demo", 0), schema="feature_shard")
    assert "slide0" in caplog.text and "x=256 y=0" in caplog.text and "could not be read" in caplog.text
    feats, coords, meta = _features(cfg.layout.features("demo_vit_a", "demo", "slide0"))
    assert meta["n_tiles_failed"] == "1" and manifest["status"].iloc[0] == "ok"
    if policy == "drop":
        assert feats.shape[0] == 6 and [256, 0] not in coords.tolist()
        assert manifest["reason"].iloc[0] == "1 unreadable tile(s) dropped"
    else:
        assert feats.shape[0] == 7 and coords.tolist()[1] == [256, 0]
    # the handle was reopened after the error: the other tiles are real, distinct embeddings
    assert len(np.unique(feats, axis=0)) == feats.shape[0]
    resumed, _ = read_parquet(embed_shard(cfg, "demo_vit_a", "demo", 0), schema="feature_shard")
    assert resumed.equals(manifest)  # a re-run reports the same, from the files' metadata


def test_corrupt_tile_fails_or_skips_the_slide_per_config(tmp_path):
    cfg = make_config(tmp_path, embedding={"on_tile_error": "fail"})
    make_cohort(cfg, tmp_path, corrupt=True)
    with pytest.raises(TileReadError, match=r"slide slide0 .*x=256 y=0"):
        embed_shard(cfg, "demo_vit_a", "demo", 0)
    assert not cfg.layout.feature_shard("demo_vit_a", "demo", "shard0000").exists()
    strict = make_config(tmp_path, embedding={"max_tile_error_fraction": 0.1})
    manifest, _ = read_parquet(embed_shard(strict, "demo_vit_a", "demo", 0), schema="feature_shard")
    assert manifest["status"].tolist()[:2] == ["skipped", "ok"]
    assert "1/7 tiles unreadable" in manifest["reason"].iloc[0]
    assert not strict.layout.features("demo_vit_a", "demo", "slide0").exists()


def test_non_finite_embedding_names_slide_and_tile(tmp_path):
    """Weights with a NaN (a broken checkpoint) must stop the job, not write NaN features."""
    import torch
    from safetensors.torch import save_file
    from support.encoders import REGISTRY

    from pathfuse.encoders.registry import EncoderSpec, build_encoder

    state = build_encoder(EncoderSpec.from_entry("x", REGISTRY["demo_vit_a"])).trunk.state_dict()
    state["norm.weight"][0] = float("nan")
    save_file(state, str(tmp_path / "broken.safetensors"))
    entry = dict(REGISTRY["demo_vit_a"], weights=str(tmp_path / "broken.safetensors"))
    cfg = make_config(tmp_path, encoders=("broken",), extra_encoders={"broken": entry})
    make_cohort(cfg, tmp_path)
    with pytest.raises(FloatingPointError, match=r"encoder 'broken', slide slide0: NaN/Inf .*tile 0 \(x=0, y=0\)"):
        embed_shard(cfg, "broken", "demo", 0)
    assert not cfg.layout.features("broken", "demo", "slide0").exists()
    assert torch.isnan(state["norm.weight"]).any()


def test_real_aperio_slide_is_embedded(tmp_path, shared_slides):
    """A real scanner file (Aperio SVS, JPEG tiles) through the same path."""
    slide = shared_slides / "CMU-1-Small-Region.svs"
    cfg = make_config(tmp_path)
    tiles = pd.DataFrame({"x": [0, 512, 1024, 1536], "y": [0, 512, 1024, 1536], "level": 0,
                                            "read_px": 512, "tile_px": 256, "mpp": 1.0, "tissue": 1.0})
    tiles_path = write_parquet(tiles, cfg.layout.tiles("demo", "cmu1"), schema="tiles")
    write_tile_shard(cfg, "demo", 0, [{"slide_id": "cmu1", "path": slide, "n_tiles": 4, "tiles_path": tiles_path}])
    manifest, _ = read_parquet(embed_shard(cfg, "demo_vit_b", "demo", 0), schema="feature_shard")
    assert manifest["status"].tolist() == ["ok"] and manifest["n_tiles"].tolist() == [4]
    feats, coords, meta = _features(cfg.layout.features("demo_vit_b", "demo", "cmu1"))
    assert feats.shape == (4, 32) and coords[:, 0].tolist() == [0, 512, 1024, 1536] and meta["mpp"] == "1.0"


def test_slide_file_gone_since_tiling_stops_with_its_name(tmp_path):
    cfg = make_config(tmp_path, embedding={"batch_size": 7})  # slide0's 7 tiles = the first batch
    make_cohort(cfg, tmp_path)
    (tmp_path / "slides" / "slide1.tiff").unlink()
    with pytest.raises(TileReadError, match=r"slide slide1: .*slide1\.tiff: no such file"):
        embed_shard(cfg, "demo_vit_a", "demo", 0)
    assert cfg.layout.features("demo_vit_a", "demo", "slide0").exists()  # finished slides are kept

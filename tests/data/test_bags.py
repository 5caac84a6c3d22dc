"""Memory-mapped bags: exact values, patient concatenation, seeded subsampling, padding, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from support.synthetic_experts import COHORT, ENCODER, bag, feature_paths, make_config, write_slides

from pathfuse.data.bags import BagDataset, BagStore, FeatureFileError, cohort_feature_paths, collate_bags
from pathfuse.paths import Layout


@pytest.fixture
def slides(tmp_path):
    rng = np.random.default_rng(0)
    feats = {f"S{i}": bag(rng, 5 + i, 6, None) for i in range(4)}
    write_slides(Layout(tmp_path / "results"), feats)
    return feats, BagStore(feature_paths(tmp_path, list(feats)))


def test_bags_read_exactly_what_the_embedding_stage_wrote(slides):
    feats, store = slides
    got = store.get(["S2"])
    assert got.dtype == torch.float32 and got.shape == (7, 6)
    assert torch.equal(got, torch.from_numpy(feats["S2"].astype(np.float16).astype(np.float32)))
    both = store.get(["S0", "S3"])
    assert both.shape == (13, 6) and torch.equal(both[5:], got.new_tensor(feats["S3"].astype(np.float16)))
    assert store.shape("S3") == (8, 6)


def test_subsampling_is_seeded_and_keeps_tile_order(slides):
    _, store = slides
    full = store.get(["S3"])
    a = store.get(["S3"], max_tiles=3, rng=np.random.default_rng(1))
    b = store.get(["S3"], max_tiles=3, rng=np.random.default_rng(1))
    assert torch.equal(a, b) and a.shape == (3, 6)
    rows = [int((full == r).all(1).nonzero()) for r in a]
    assert rows == sorted(rows)
    assert torch.equal(store.get(["S0"], max_tiles=50, rng=np.random.default_rng(1)), store.get(["S0"]))


def test_dataset_and_collate_pad_with_a_mask(slides):
    _, store = slides
    data = BagDataset(store, [["S0"], ["S3"]], {"label": np.array([1, 0])})
    batch = collate_bags([data[0], data[1]])
    feats, mask = batch["inputs"]["features"], batch["inputs"]["mask"]
    assert feats.shape == (2, 8, 6) and mask.sum(1).tolist() == [5, 8]
    assert (
        feats[0, 5:].abs().sum() == 0
        and batch["label"].tolist() == [1, 0]
        and batch["index"].tolist() == [0, 1]
    )
    with pytest.raises(ValueError, match="has 1 values for 2 bags"):
        BagDataset(store, [["S0"], ["S3"]], {"label": np.array([1])})


def test_missing_files_and_manifests_are_named(tmp_path, slides):
    _, store = slides
    store.paths["S1"].unlink()
    with pytest.raises(FileNotFoundError, match="features of slide 'S1' not found"):
        store.get(["S1"])
    with pytest.raises(KeyError, match="'nope'"):
        store.get(["nope"])
    cfg = make_config(tmp_path, ["tbin"], n_shards=3)
    with pytest.raises(
        FileNotFoundError, match=r"shard0002.parquet: feature manifest .*run the embed_slides rule"
    ):
        cohort_feature_paths(cfg, ENCODER, COHORT)
    paths, unavailable = cohort_feature_paths(make_config(tmp_path, ["tbin"]), ENCODER, COHORT)
    assert sorted(paths) == ["S0", "S1", "S2", "S3"] and unavailable == {}


def test_a_damaged_features_file_is_named_with_its_fix(tmp_path):
    """A features file cut short after it was written (disk full, a bad copy) fails naming the slide and file."""
    path = tmp_path / "S1.safetensors"
    save_file({"features": torch.ones(4, 3, dtype=torch.float16), "coords": torch.zeros(4, 2, dtype=torch.int64)},
              str(path))
    path.write_bytes(path.read_bytes()[:40])
    store = BagStore({"S1": path})
    with pytest.raises(FeatureFileError, match=r"slide 'S1' cannot be read from .*S1\.safetensors.*rerun its embed"):
        store.get(["S1"])

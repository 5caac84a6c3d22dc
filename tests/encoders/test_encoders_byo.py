"""Bring your own features: TRIDENT/CLAM HDF5 bags and tile feature matrices enter as stage-1 outputs."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
from safetensors import safe_open
from support.encoders import make_config

from pathfuse.encoders.byo import FeatureImportError
from pathfuse.encoders.extract import embed_shard
from pathfuse.encoders.tile_datasets import embed_dataset
from pathfuse.io import read_parquet

MINE = {"mine": {"kind": "byo", "dim": 8, "description": "features from elsewhere"}}


def _bags(folder, n_slides=3, dim=8, clam=False):
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    bags = {}
    for i in range(n_slides):
        n = 4 + i
        feats = rng.normal(size=(n, dim)).astype(np.float32)
        coords = np.stack([np.arange(n) * 256, np.zeros(n)], axis=1).astype(np.int64)
        with h5py.File(folder / f"case{i}.h5", "w") as fh:
            fh["feats" if clam else "features"] = feats[None] if clam else feats
            fh["coords"] = coords
            fh["coords"].attrs["patch_size"] = 256
        bags[f"case{i}"] = (feats, coords)
    return bags


def _slide_config(tmp_path, folder, policy="error", n_shards=1):
    return make_config(tmp_path, encoders=("mine",), extra_encoders=MINE,
                       cohorts={"demo": {"slides": str(tmp_path / "none" / "*.svs"), "n_shards": n_shards}},
                       embedding={"byo": {"nan_policy": policy, "slides": {"mine": {"demo": str(folder)}}}})


def _read_bag(path):
    with safe_open(str(path), framework="np") as fh:
        return fh.get_tensor("features"), fh.get_tensor("coords"), fh.metadata()


@pytest.mark.parametrize("clam", [False, True])
def test_hdf5_bags_are_imported_as_slide_features(tmp_path, clam):
    bags = _bags(tmp_path / "trident", clam=clam)
    cfg = _slide_config(tmp_path, tmp_path / "trident", n_shards=2)
    first, _ = read_parquet(embed_shard(cfg, "mine", "demo", 0), schema="feature_shard")
    second, meta = read_parquet(embed_shard(cfg, "mine", "demo", 1), schema="feature_shard")
    assert first["slide_id"].tolist() == ["case0", "case1"] and second["slide_id"].tolist() == ["case2"]
    assert meta["byo"] == str(tmp_path / "trident")
    for slide_id, (feats, coords) in bags.items():
        got, got_coords, fmeta = _read_bag(cfg.layout.features("mine", "demo", slide_id))
        assert got.dtype == np.float16 and np.array_equal(got, feats.astype(np.float16))
        assert np.array_equal(got_coords, coords)
        assert fmeta["encoder"] == "mine" and fmeta["weights_sha256"] == "byo" and fmeta["tile_px"] == "256"
        assert len(fmeta["source_sha256"]) == 64 and fmeta["nan_policy"] == "error"


def test_nan_policy_error_names_encoder_slide_and_tiles(tmp_path):
    bags = _bags(tmp_path / "trident")
    with h5py.File(tmp_path / "trident" / "case1.h5", "r+") as fh:
        fh["features"][2, 3] = np.nan
    cfg = _slide_config(tmp_path, tmp_path / "trident")
    with pytest.raises(FeatureImportError, match=r"encoder 'mine', slide case1 .*1 row\(s\).*tile 2 \(x=512, y=0\)"):
        embed_shard(cfg, "mine", "demo", 0)
    assert bags  # the other bags were valid


def test_nan_policy_drop_and_impute_are_recorded(tmp_path):
    bags = _bags(tmp_path / "trident")
    with h5py.File(tmp_path / "trident" / "case1.h5", "r+") as fh:
        fh["features"][2, 3] = np.inf
    dropped = _slide_config(tmp_path / "d", tmp_path / "trident", policy="drop")
    manifest, _ = read_parquet(embed_shard(dropped, "mine", "demo", 0), schema="feature_shard")
    feats, coords, meta = _read_bag(dropped.layout.features("mine", "demo", "case1"))
    assert feats.shape[0] == 4 and 512 not in coords[:, 0] and meta["n_rows_dropped"] == "1"
    assert manifest.set_index("slide_id").loc["case1", "reason"] == "1 tile(s) with NaN/Inf dropped"
    imputed = _slide_config(tmp_path / "i", tmp_path / "trident", policy="impute_mean")
    embed_shard(imputed, "mine", "demo", 0)
    feats, _, meta = _read_bag(imputed.layout.features("mine", "demo", "case1"))
    original = bags["case1"][0]
    expected = np.delete(original[:, 3], 2).mean()
    assert feats.shape[0] == 5 and feats[2, 3] == np.float16(expected) and meta["n_values_imputed"] == "1"


def test_wrong_dim_and_missing_datasets_are_errors(tmp_path):
    _bags(tmp_path / "trident", dim=6)
    with pytest.raises(FeatureImportError, match=r"are 6-d \(e\.g\. .*case0\.h5\) but the encoder registry says dim 8"):
        embed_shard(_slide_config(tmp_path, tmp_path / "trident"), "mine", "demo", 0)
    bad = tmp_path / "bad"
    bad.mkdir()
    with h5py.File(bad / "x.h5", "w") as fh:
        fh["embeddings"] = np.zeros((2, 8), np.float32)
    with pytest.raises(FeatureImportError,
                       match=r"x\.h5: unreadable: no 'features' \(or 'feats'\) dataset; it has \['embeddings'\]"):
        embed_shard(_slide_config(tmp_path / "b", bad), "mine", "demo", 0)


def test_bags_without_coords_import_with_a_recorded_note(tmp_path):
    """STAMP/mopadi-style bags (features only) train experts; their files say coords are absent."""
    folder = tmp_path / "stamp"
    folder.mkdir()
    feats = np.arange(24, dtype=np.float32).reshape(3, 8)
    with h5py.File(folder / "s1.h5", "w") as fh:
        fh["feats"] = feats
    cfg = _slide_config(tmp_path, folder)
    manifest, _ = read_parquet(embed_shard(cfg, "mine", "demo", 0), schema="feature_shard")
    assert manifest["status"].tolist() == ["ok"]
    got, coords, meta = _read_bag(cfg.layout.features("mine", "demo", "s1"))
    assert np.array_equal(got, feats.astype(np.float16)) and meta["coords"] == "absent" and (coords == -1).all()
    from pathfuse.data.bags import BagStore

    assert BagStore({"s1": cfg.layout.features("mine", "demo", "s1")}).coords("s1") is None


def _tile_config(tmp_path, matrix_entry, policy="error"):
    labels = pd.DataFrame({"sample_id": [f"t{i}" for i in range(6)], "label": ["normal", "tumor"] * 3,
                           "split": ["train", "train", "train", "valid", "test", "test"]})
    labels.to_csv(tmp_path / "labels.csv", index=False)
    return make_config(tmp_path, encoders=("mine",), extra_encoders=MINE,
                       tile_datasets={"feat_ds": {"path": str(tmp_path / "labels.csv"), "format": "features"}},
                       task_data={"pcam": {"dataset": "feat_ds"}},
                       embedding={"byo": {"nan_policy": policy, "tiles": {"mine": {"feat_ds": matrix_entry}}}})


def _tile_read(cfg):
    index, meta = read_parquet(cfg.layout.tile_feature_index("mine", "feat_ds"), schema="tile_feature_index")
    with safe_open(str(cfg.layout.tile_features("mine", "feat_ds")), framework="np") as fh:
        return fh.get_tensor("features"), index, meta


def test_tile_matrix_in_label_table_order_from_npy(tmp_path):
    matrix = np.random.default_rng(0).normal(size=(6, 8)).astype(np.float32)
    np.save(tmp_path / "m.npy", matrix)
    cfg = _tile_config(tmp_path, {"path": str(tmp_path / "m.npy")})
    embed_dataset(cfg, "mine", "feat_ds")
    feats, index, meta = _tile_read(cfg)
    assert np.array_equal(feats, matrix.astype(np.float16))
    assert index["sample_id"].tolist() == [f"t{i}" for i in range(6)]
    assert index["split"].tolist()[3] == "val" and meta["dropped"] == []


def test_tile_matrix_rows_follow_ids_and_missing_ids_fail(tmp_path):
    matrix = np.arange(7 * 8, dtype=np.float32).reshape(7, 8)
    ids = ["t5", "t4", "extra", "t3", "t2", "t1", "t0"]
    with h5py.File(tmp_path / "m.h5", "w") as fh:
        fh["features"], fh["sample_id"] = matrix, np.array(ids, dtype="S")
    cfg = _tile_config(tmp_path, {"path": str(tmp_path / "m.h5"), "ids": "sample_id"})
    embed_dataset(cfg, "mine", "feat_ds")
    feats, index, _ = _tile_read(cfg)
    assert feats[index["sample_id"].tolist().index("t0"), 0] == matrix[6, 0]
    assert feats[0, 0] == matrix[ids.index("t0"), 0]
    table = pd.DataFrame({"sample_id": ids[:5], "features": list(matrix[:5])})
    table.to_parquet(tmp_path / "m.parquet")
    other = tmp_path / "other"
    other.mkdir()
    short = _tile_config(other, {"path": str(tmp_path / "m.parquet")})
    with pytest.raises(FeatureImportError, match=r"2 sample\(s\) .* no features, e.g. \['t0', 't1'\]"):
        embed_dataset(short, "mine", "feat_ds")


def test_tile_matrix_nan_policies(tmp_path):
    matrix = np.random.default_rng(0).normal(size=(6, 8)).astype(np.float32)
    matrix[4, 1] = np.nan  # a test sample
    np.save(tmp_path / "m.npy", matrix)
    with pytest.raises(FeatureImportError, match=r"encoder 'mine', dataset feat_ds.*\['t4'\]"):
        embed_dataset(_tile_config(tmp_path, {"path": str(tmp_path / "m.npy")}), "mine", "feat_ds")
    cfg = _tile_config(tmp_path, {"path": str(tmp_path / "m.npy")}, policy="drop")
    embed_dataset(cfg, "mine", "feat_ds")
    feats, index, meta = _tile_read(cfg)
    assert "t4" not in set(index["sample_id"]) and feats.shape == (5, 8)
    assert meta["dropped"] == [{"sample_id": "t4", "reason": "NaN/Inf features"}] and meta["n_rows_dropped"] == 1
    cfg = _tile_config(tmp_path, {"path": str(tmp_path / "m.npy")}, policy="impute_mean")
    embed_dataset(cfg, "mine", "feat_ds")
    feats, index, meta = _tile_read(cfg)
    assert feats[4, 1] == np.float16(matrix[:3, 1].mean())  # mean of the training split only
    assert meta["n_values_imputed"] == 1

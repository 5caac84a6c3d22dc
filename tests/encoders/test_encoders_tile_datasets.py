"""Stage embed_tiles: class-folder images and PatchCamelyon HDF5 into one file + index per dataset."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open
from support.encoders import make_config, write_pcam

from pathfuse.config import ConfigError
from pathfuse.encoders.tile_datasets import embed_dataset, embed_tile_datasets
from pathfuse.encoders.tile_sources import list_image_folder
from pathfuse.io import read_parquet


def _image_folder(root, splits=("train", "valid", "test"), classes=("TUM", "STR"), n=2, size=48):
    rng = np.random.default_rng(0)
    suffixes = [".png", ".jpg", ".tif"]
    for split in splits:
        for c in classes:
            folder = root / split / c if split else root / c
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 255, (size, size + 8 * i, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"img{i}{suffixes[i % 3]}")


def _read(cfg, encoder, dataset):
    index, meta = read_parquet(cfg.layout.tile_feature_index(encoder, dataset), schema="tile_feature_index")
    with safe_open(str(cfg.layout.tile_features(encoder, dataset)), framework="np") as fh:
        return fh.get_tensor("features"), fh.metadata(), index, meta


def _folder_config(tmp_path, root, **embedding):
    return make_config(tmp_path, tasks=["crc100k"], task_data={"crc100k": {"dataset": "tiles"}},
                       tile_datasets={"tiles": {"path": str(root), "format": "image_folder"}}, embedding=embedding)


def test_image_folder_with_split_folders(tmp_path):
    root = tmp_path / "tiles"
    _image_folder(root)
    cfg = _folder_config(tmp_path, root)
    out = embed_dataset(cfg, "demo_vit_b", "tiles")
    assert out == cfg.layout.tile_feature_index("demo_vit_b", "tiles")
    feats, fmeta, index, meta = _read(cfg, "demo_vit_b", "tiles")
    assert feats.shape == (12, 32) and feats.dtype == np.float16 and np.isfinite(feats).all()
    assert index["row"].tolist() == list(range(12))
    assert sorted(set(index["split"])) == ["test", "train", "val"]  # "valid" normalised
    assert set(index["label"]) == {"TUM", "STR"}
    assert "valid/STR/img1" in set(index["sample_id"]) and (index["group"] == index["sample_id"]).all()
    assert fmeta["encoder"] == "demo_vit_b" and fmeta["weights_sha256"] == meta["weights_sha256"]
    assert meta["dropped"] == [] and meta["dim"] == 32


def test_image_folder_without_splits_and_resume(tmp_path):
    root = tmp_path / "tiles"
    _image_folder(root, splits=("",), n=3)
    cfg = _folder_config(tmp_path, root)
    embed_dataset(cfg, "demo_vit_a", "tiles")
    _, _, index, _ = _read(cfg, "demo_vit_a", "tiles")
    assert (index["split"] == "").all() and len(index) == 6
    stamp = cfg.layout.tile_features("demo_vit_a", "tiles").stat().st_mtime_ns
    embed_dataset(cfg, "demo_vit_a", "tiles")
    assert cfg.layout.tile_features("demo_vit_a", "tiles").stat().st_mtime_ns == stamp


def test_mixed_split_and_class_folders_are_refused(tmp_path):
    _image_folder(tmp_path / "tiles", splits=("train",))
    (tmp_path / "tiles" / "TUM").mkdir()
    with pytest.raises(ConfigError, match="mixes split folders"):
        list_image_folder(tmp_path / "tiles")


def test_corrupt_image_is_dropped_and_recorded(tmp_path, caplog):
    root = tmp_path / "tiles"
    _image_folder(root, splits=("train",))
    (root / "train" / "TUM" / "img0.png").write_bytes(b"not a png at all")
    cfg = _folder_config(tmp_path, root)
    embed_dataset(cfg, "demo_vit_a", "tiles")
    feats, fmeta, index, meta = _read(cfg, "demo_vit_a", "tiles")
    assert len(index) == feats.shape[0] == 3 and "train/TUM/img0" not in set(index["sample_id"])
    assert meta["dropped"] == [{"sample_id": "train/TUM/img0", "reason": "unreadable image"}]
    assert fmeta["n_tiles_failed"] == "1" and "train/TUM/img0" in caplog.text


def test_pcam_hdf5_labels_use_the_task_classes(tmp_path):
    import h5py

    write_pcam(tmp_path / "pcam", {"train": 6, "valid": 3, "test": 4})
    with h5py.File(tmp_path / "pcam" / "camelyonpatch_level_2_split_train_x.h5", "r") as fh:
        first_train = fh["x"][0]
    with h5py.File(tmp_path / "pcam" / "camelyonpatch_level_2_split_test_x.h5", "r+") as fh:
        fh["x"][0] = first_train  # same pixels → same embedding, wherever the row is
    cfg = make_config(tmp_path, embedding={"num_workers": 1})
    embed_dataset(cfg, "demo_vit_c", "pcam_ds")
    feats, _, index, _ = _read(cfg, "demo_vit_c", "pcam_ds")
    assert feats.shape == (13, 128)
    assert index["split"].value_counts().to_dict() == {"train": 6, "test": 4, "val": 3}
    by_id = index.set_index("sample_id")
    assert by_id.loc["train_0", "label"] == "normal" and by_id.loc["train_1", "label"] == "tumor"
    assert by_id.loc["val_2", "group"] == "wsi_0" and by_id.loc["train_5", "group"] == "wsi_1"
    row = by_id["row"]
    assert np.array_equal(feats[row["test_0"]], feats[row["train_0"]])
    assert not np.array_equal(feats[row["test_1"]], feats[row["train_0"]])


def test_one_job_embeds_every_tile_dataset_of_the_encoder_and_skips_finished_ones(tmp_path):
    write_pcam(tmp_path / "pcam", {"train": 4, "valid": 2, "test": 2})
    _image_folder(tmp_path / "tiles", splits=("train", "test"))
    cfg = make_config(tmp_path, tasks=["pcam", "crc100k"],
                      task_data={"pcam": {"dataset": "pcam_ds"}, "crc100k": {"dataset": "tiles"}},
                      tile_datasets={"pcam_ds": {"path": str(tmp_path / "pcam"), "format": "pcam_hdf5"},
                                     "tiles": {"path": str(tmp_path / "tiles"), "format": "image_folder"},
                                     "unused": {"path": str(tmp_path / "nowhere"), "format": "image_folder"}})
    embed_dataset(cfg, "demo_vit_a", "tiles")  # finished before the job (e.g. by a killed run)
    stamp = cfg.layout.tile_features("demo_vit_a", "tiles").stat().st_mtime_ns
    out = embed_tile_datasets(cfg, "demo_vit_a")
    manifest, meta = read_parquet(out, schema="tile_features_manifest")
    assert out == cfg.layout.tile_features_manifest("demo_vit_a") and meta["encoder"] == "demo_vit_a"
    assert manifest["dataset"].tolist() == ["pcam_ds", "tiles"]  # only datasets of the run's tile tasks
    assert manifest["n_samples"].tolist() == [8, 8]
    assert cfg.layout.tile_features("demo_vit_a", "tiles").stat().st_mtime_ns == stamp
    assert _read(cfg, "demo_vit_a", "pcam_ds")[0].shape == (8, 48)


def test_level_features_are_written_only_when_asked_and_added_on_a_rerun(tmp_path):
    """levels: false writes none; switching to tiles re-embeds once, the embedding itself unchanged."""
    from pathfuse.encoders.levels import LEVELS_KEY, has_levels

    root = tmp_path / "tiles"
    _image_folder(root, splits=("",), n=2)
    plain_cfg = _folder_config(tmp_path, root)
    embed_dataset(plain_cfg, "demo_vit_c", "tiles")
    path = plain_cfg.layout.tile_features("demo_vit_c", "tiles")
    assert not has_levels(path)
    plain, *_ = _read(plain_cfg, "demo_vit_c", "tiles")
    cfg = _folder_config(tmp_path, root, levels="tiles")
    embed_dataset(cfg, "demo_vit_c", "tiles")
    assert has_levels(path)
    with safe_open(str(path), framework="np") as fh:
        feats, levels = fh.get_tensor("features"), fh.get_tensor(LEVELS_KEY)
    np.testing.assert_array_equal(feats, plain)
    assert levels.shape == (len(feats), 2, 128) and levels.dtype == np.float16
    assert not np.allclose(levels[:, 0], levels[:, 1])

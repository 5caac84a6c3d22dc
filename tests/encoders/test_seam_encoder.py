"""The encoder seam: a new foundation model is one encoder-registry entry and a local weight file.

No library code changes: the run config names a lab's own registry (``registries.encoders``),
the entry gives a timm architecture with its kwargs, the embedding rule, the input size and
normalisation, the dimension and the weight file; the library builds it, loads the weights
and embeds tiles. docs/architecture.md, "Extending pathfuse: the files you touch", points here.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
import yaml
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from pathfuse import resources
from pathfuse.config import Config
from pathfuse.encoders.registry import EncoderSpec, build_encoder, encoder_spec
from pathfuse.encoders.tile_datasets import embed_dataset
from pathfuse.encoders.weights import load_encoder
from pathfuse.io import read_parquet

NAME = "lab_vit_tiny"
#: The whole "new model": what a lab adds to its own encoders.yaml.
ENTRY = {
    "description": "a lab's tiny ViT (random weights saved to a local file)",
    "arch": "vit_tiny_patch16_224",
    "kwargs": {"img_size": 32, "patch_size": 8, "embed_dim": 24, "depth": 1, "num_heads": 2},
    "embedding": "cls_mean_patch",
    "input_px": 32,
    "mean": [0.5, 0.5, 0.5],
    "std": [0.25, 0.25, 0.25],
    "precision": "fp32",
    "dim": 48,  # class token ⊕ mean of patch tokens
    "weights": "lab/vit_tiny.safetensors",  # relative to embedding.weights_dir
}


def _write_weights(path) -> dict[str, torch.Tensor]:
    """A checkpoint in timm's own key naming (what a model publisher ships), seeded random values."""
    torch.manual_seed(1234)
    trunk = build_encoder(EncoderSpec.from_entry(NAME, ENTRY)).trunk
    state = {k: v.contiguous() for k, v in trunk.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return state


def _tiles(root, classes=("TUM", "STR"), n=3) -> None:
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (40, 44, 3), dtype=np.uint8)).save(root / c / f"img{i}.png")


def _config(tmp_path) -> Config:
    registry = tmp_path / "my_encoders.yaml"
    registry.write_text(yaml.safe_dump({NAME: ENTRY}))
    return Config.from_dict({
        "results_dir": str(tmp_path / "results"), "seed": 0,
        "registries": {"tasks": str(resources.registry("tasks")), "encoders": str(registry)},
        "encoders": [NAME], "tasks": ["crc100k"],
        "tile_datasets": {"tiles": {"path": str(tmp_path / "tiles"), "format": "image_folder"}},
        "task_data": {"crc100k": {"dataset": "tiles"}},
        "embedding": {"num_workers": 0, "batch_size": 4, "weights_dir": str(tmp_path / "weights")},
    })


def test_a_new_encoder_is_a_registry_entry_and_a_weight_file(tmp_path):
    cfg = _config(tmp_path)
    weights = tmp_path / "weights" / ENTRY["weights"]
    state = _write_weights(weights)
    assert encoder_spec(cfg, NAME).dim == 48 and cfg.encoder_ids == [NAME]

    loaded = load_encoder(cfg, NAME)  # the file's values, not a fresh random init
    for key, value in state.items():
        torch.testing.assert_close(loaded.model.trunk.state_dict()[key], value)
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert loaded.weights_sha256 == sha and loaded.weights_source == str(weights)

    _tiles(tmp_path / "tiles")
    index, meta = read_parquet(embed_dataset(cfg, NAME, "tiles"), schema="tile_feature_index")
    with safe_open(str(cfg.layout.tile_features(NAME, "tiles")), framework="np") as fh:
        feats = fh.get_tensor("features")
    assert feats.shape == (6, 48) and np.isfinite(feats).all() and feats.std() > 0
    assert meta["dim"] == 48 and meta["weights_sha256"] == sha and set(index["label"]) == {"TUM", "STR"}

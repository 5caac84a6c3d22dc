"""Weights load only from local files, strictly; their hash is provenance."""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from support.encoders import make_config

from pathfuse.encoders.registry import EncoderModel, EncoderSpec, build_encoder
from pathfuse.encoders.weights import WeightsError, file_sha256, load_encoder, state_sha256

TINY: dict[str, Any] = {
    "arch": "vit_tiny_patch16_224",
    "kwargs": {"img_size": 32, "patch_size": 16, "embed_dim": 16, "depth": 1, "num_heads": 2},
    "embedding": "cls", "input_px": 32, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "precision": "fp32",
    "dim": 16, "weights_url": "https://example.org/tiny",
}
DINO = dict(TINY, arch="vit_small_patch14_dinov2", kwargs={"img_size": 32, "patch_size": 8, "embed_dim": 16,
                                                            "depth": 2, "num_heads": 2}, remap="hf_dinov2")
CONCH = dict(TINY, kwargs={"img_size": 32, "patch_size": 16, "embed_dim": 16, "depth": 1, "num_heads": 2,
                           "init_values": 1.0},
             embedding="attn_pool", head={"type": "attn_pool", "d_model": 8, "n_heads": 2}, remap="conch_v15", dim=8)


def _source_model(entry: dict, seed: int = 3) -> EncoderModel:
    torch.manual_seed(seed)
    return build_encoder(EncoderSpec.from_entry("src", entry)).eval()


def _config(tmp_path, **entries):
    return make_config(tmp_path, embedding={"weights_dir": str(tmp_path / "weights")}, extra_encoders=entries)


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module, px: int = 32) -> None:
    x = torch.randn(2, 3, px, px)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


def test_hub_is_offline():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"


@pytest.mark.parametrize("suffix", [".safetensors", ".bin"])
def test_timm_checkpoint_loads_exactly_and_hash_is_the_files(tmp_path, suffix):
    source = _source_model(TINY)
    trunk_state = source.trunk.state_dict()
    path = tmp_path / "weights" / f"tiny/model{suffix}"
    path.parent.mkdir(parents=True)
    if suffix == ".safetensors":
        save_file(trunk_state, str(path))
    else:
        torch.save({"model": {f"module.{k}": v for k, v in trunk_state.items()}, "epoch": 3}, path)
    cfg = _config(tmp_path, tiny=dict(TINY, weights=f"tiny/model{suffix}"))
    loaded = load_encoder(cfg, "tiny")
    _same_outputs(source, loaded.model)
    assert loaded.weights_sha256 == file_sha256(path) and loaded.weights_source == str(path)


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    state = _source_model(TINY).trunk.state_dict()
    state.pop("blocks.0.attn.qkv.weight")
    state["extra.bias"] = torch.zeros(2)
    (tmp_path / "weights").mkdir()
    save_file(state, str(tmp_path / "weights" / "tiny.safetensors"))
    cfg = _config(tmp_path, tiny=dict(TINY, weights="tiny.safetensors"))
    with pytest.raises(WeightsError) as err:
        load_encoder(cfg, "tiny")
    message = str(err.value)
    assert "encoder 'tiny'" in message and "tiny.safetensors" in message
    assert "1 missing key(s): [trunk.blocks.0.attn.qkv.weight]" in message
    assert "1 unexpected key(s): [trunk.extra.bias]" in message


def test_missing_file_says_where_to_get_the_weights(tmp_path):
    cfg = _config(tmp_path, tiny=dict(TINY, weights="tiny/model.safetensors"))
    with pytest.raises(WeightsError) as err:
        load_encoder(cfg, "tiny")
    message = str(err.value)
    assert "encoder 'tiny'" in message and str(tmp_path / "weights" / "tiny/model.safetensors") in message
    assert "https://example.org/tiny" in message and "never downloads" in message


def test_pickled_objects_are_refused(tmp_path):
    (tmp_path / "weights").mkdir()
    torch.save({"weights": _Opaque()}, tmp_path / "weights" / "evil.pth")
    cfg = _config(tmp_path, tiny=dict(TINY, weights="evil.pth"))
    with pytest.raises(WeightsError, match=r"weights_only=True.*safetensors"):
        load_encoder(cfg, "tiny")


class _Opaque:
    pass


def test_hf_dinov2_checkpoint_is_remapped_to_timm(tmp_path):
    """A Hugging Face Dinov2Model state dict (Phikon-v2 layout) gives the same model as timm's."""
    source = _source_model(DINO)
    timm_state = source.trunk.state_dict()
    hf = {"embeddings.cls_token": timm_state["cls_token"], "embeddings.mask_token": torch.zeros(1, 16),
          "embeddings.position_embeddings": timm_state["pos_embed"],
          "embeddings.patch_embeddings.projection.weight": timm_state["patch_embed.proj.weight"],
          "embeddings.patch_embeddings.projection.bias": timm_state["patch_embed.proj.bias"],
          "layernorm.weight": timm_state["norm.weight"], "layernorm.bias": timm_state["norm.bias"]}
    for i in range(2):
        b, e = f"blocks.{i}.", f"encoder.layer.{i}."
        for kind in ("weight", "bias"):
            q, k, v = timm_state[b + f"attn.qkv.{kind}"].chunk(3)
            hf |= {e + f"attention.attention.query.{kind}": q, e + f"attention.attention.key.{kind}": k,
                   e + f"attention.attention.value.{kind}": v,
                   e + f"attention.output.dense.{kind}": timm_state[b + f"attn.proj.{kind}"],
                   e + f"norm1.{kind}": timm_state[b + f"norm1.{kind}"],
                   e + f"norm2.{kind}": timm_state[b + f"norm2.{kind}"],
                   e + f"mlp.fc1.{kind}": timm_state[b + f"mlp.fc1.{kind}"],
                   e + f"mlp.fc2.{kind}": timm_state[b + f"mlp.fc2.{kind}"]}
        hf |= {e + "layer_scale1.lambda1": timm_state[b + "ls1.gamma"],
               e + "layer_scale2.lambda1": timm_state[b + "ls2.gamma"]}
    (tmp_path / "weights").mkdir()
    save_file({k: v.contiguous() for k, v in hf.items()}, str(tmp_path / "weights" / "phikon.safetensors"))
    cfg = _config(tmp_path, dino=dict(DINO, weights="phikon.safetensors"))
    _same_outputs(source, load_encoder(cfg, "dino").model)


def test_conch_v15_checkpoint_loads_trunk_and_pooling_head(tmp_path):
    source = _source_model(CONCH)
    assert source.head is not None  # CONCH's attention-pooling head
    state = {f"trunk.{k}": v for k, v in source.trunk.state_dict().items()}
    renames = {"head.pool.": "attn_pool_contrast.", "head.norm.": "ln_contrast."}
    for key, value in source.head.state_dict().items():
        prefix = "head.pool." if key.startswith("pool.") else "head.norm."
        state[renames[prefix] + key.split(".", 1)[1]] = value
    (tmp_path / "weights").mkdir()
    torch.save(state, tmp_path / "weights" / "conch.bin")
    cfg = _config(tmp_path, conch=dict(CONCH, weights="conch.bin"))
    loaded = load_encoder(cfg, "conch")
    _same_outputs(source, loaded.model)
    assert loaded.model(torch.randn(1, 3, 32, 32)).shape == (1, 8)


def test_position_embeddings_of_another_grid_are_resampled(tmp_path):
    """A checkpoint trained at another resolution (e.g. CONCH v1.5 at 224 → 448) still loads."""
    small = _source_model(dict(TINY, kwargs={**TINY["kwargs"], "img_size": 16}))
    (tmp_path / "weights").mkdir()
    save_file(small.trunk.state_dict(), str(tmp_path / "weights" / "grid.safetensors"))
    loaded = load_encoder(_config(tmp_path, tiny=dict(TINY, weights="grid.safetensors")), "tiny")
    assert loaded.model.trunk.pos_embed.shape == (1, 1 + 4, 16)


def test_demo_weights_are_seeded_by_run_seed_and_name(tmp_path):
    cfg = make_config(tmp_path)
    a, b = load_encoder(cfg, "demo_vit_a"), load_encoder(cfg, "demo_vit_a")
    assert a.weights_sha256 == b.weights_sha256 == state_sha256(b.model)
    other_seed = make_config(tmp_path, seed=7)
    assert load_encoder(other_seed, "demo_vit_a").weights_sha256 != a.weights_sha256
    assert a.weights_source.startswith("random-init seed=")
    assert not any(p.requires_grad for p in a.model.parameters()) and not a.model.training

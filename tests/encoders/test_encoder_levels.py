"""Level features (shazam_levels' low/mid/high teachers) against the block outputs taken by hand."""

from __future__ import annotations

import pytest
import torch
from support.encoders import REGISTRY

from pathfuse.config import ConfigError
from pathfuse.encoders.levels import level_problem
from pathfuse.encoders.registry import EncoderSpec, build_encoder, default_level_blocks


def test_default_level_blocks_follow_the_public_code_examples():
    assert default_level_blocks(24) == (8, 16, 24)  # 0-based 7, 15, 23 (ViT-L)
    assert default_level_blocks(40) == (14, 27, 40)  # 0-based 13, 26, 39 (ViT-g)
    assert default_level_blocks(3) == (1, 2, 3)
    with pytest.raises(ConfigError, match="no 3 distinct levels"):
        default_level_blocks(2)


def _hooked(model, x: torch.Tensor, blocks: list[int]) -> dict[int, torch.Tensor]:
    """Each listed (1-based) block's output tokens, taken by forward hooks during a plain forward."""
    taken: dict[int, torch.Tensor] = {}
    handles = [model.trunk.blocks[b - 1].register_forward_hook(
        lambda _m, _i, out, b=b: taken.__setitem__(b, out.detach().clone())) for b in blocks]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return taken


@pytest.mark.parametrize("name", ["demo_vit_a", "demo_vit_b", "demo_vit_c"])
def test_level_features_are_the_token_rule_on_each_block_output(name):
    """cls: the block's class token; mean_patch: its patch-token mean (registers skipped); cls_mean_patch: both."""
    spec = EncoderSpec.from_entry(name, REGISTRY[name])
    torch.manual_seed(0)
    model = build_encoder(spec).eval()
    x = torch.randn(3, 3, spec.input_px, spec.input_px)
    with torch.no_grad():
        plain = model(x)
    depth = len(model.trunk.blocks)
    low, mid, high = default_level_blocks(depth)
    taken = _hooked(model, x, [low, mid])
    with torch.no_grad():
        out = model.with_levels(None)(x)
    assert out.shape == (3, 3 * spec.dim)
    torch.testing.assert_close(out[:, : spec.dim], plain)  # the high level is the embedding itself
    prefix = model.trunk.num_prefix_tokens
    for k, block in enumerate((low, mid), start=1):
        tokens = taken[block]
        expected = {"cls": tokens[:, 0], "mean_patch": tokens[:, prefix:].mean(1),
                    "cls_mean_patch": torch.cat([tokens[:, 0], tokens[:, prefix:].mean(1)], dim=1)}[spec.embedding]
        torch.testing.assert_close(out[:, k * spec.dim: (k + 1) * spec.dim], expected)
    assert high == depth


def test_explicit_level_blocks_are_checked():
    spec = EncoderSpec.from_entry("demo_vit_a", REGISTRY["demo_vit_a"])
    model = build_encoder(spec)
    depth = len(model.trunk.blocks)
    with pytest.raises(ConfigError, match="ending with the last"):
        model.with_levels((1, 2, depth - 1 if depth > 3 else 2))


def test_encoders_without_a_level_rule_say_why():
    assert level_problem("conch_v15", REGISTRY["conch_v15"]).startswith("encoder 'conch_v15': embedding rule")
    assert "no level rule" in level_problem("ctranspath", REGISTRY["ctranspath"])
    assert level_problem("uni", REGISTRY["uni"]) is None
    assert "imported (bring-your-own)" in level_problem("mine", {"kind": "byo", "dim": 16})
    assert "2 block(s)" in level_problem("tiny", {**REGISTRY["demo_vit_a"], "kwargs": {"depth": 2}})

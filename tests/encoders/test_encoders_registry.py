"""The encoder registry: every entry builds (meta device, no memory) with the declared dim."""

from __future__ import annotations

import pytest
import torch
from support.encoders import REGISTRY, REPO

from pathfuse.config import ConfigError, load_yaml, validate
from pathfuse.encoders.layers import HEADS
from pathfuse.encoders.registry import EMBEDDING_RULES, EncoderSpec, build_encoder, output_dim
from pathfuse.encoders.weights import WEIGHT_REMAPS

SCHEMA = load_yaml(REPO / "src" / "pathfuse" / "resources" / "schemas" / "encoders.schema.yaml")
REAL_FMS = ["uni", "uni2_h", "virchow2", "gigapath", "hoptimus0", "hoptimus1", "phikon_v2", "conch_v15",
            "lunit_vits8", "kaiko_vitl14", "ctranspath"]


def test_registry_is_valid_and_lists_demo_and_real_encoders():
    validate(REGISTRY, SCHEMA, "encoder registry")
    assert {"demo_vit_a", "demo_vit_b", "demo_vit_c", *REAL_FMS} <= set(REGISTRY)
    for name in REAL_FMS:
        assert REGISTRY[name]["weights"] and REGISTRY[name]["weights_url"].startswith("https://"), name
    for name in ("demo_vit_a", "demo_vit_b", "demo_vit_c"):
        assert REGISTRY[name]["weights"] is None


def test_schema_enums_match_the_code_registries():
    props = SCHEMA["additionalProperties"]["properties"]
    assert sorted(props["embedding"]["enum"]) == EMBEDDING_RULES.names()
    assert sorted(props["remap"]["enum"]) == WEIGHT_REMAPS.names()
    assert sorted(props["head"]["properties"]["type"]["enum"]) == HEADS.names()


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_entry_builds_on_meta_with_its_dim(name):
    spec = EncoderSpec.from_entry(name, REGISTRY[name])
    with torch.device("meta"):
        model = build_encoder(spec)
    assert next(model.parameters()).device.type == "meta"
    assert output_dim(model, spec) == spec.dim


def test_register_tokens_are_skipped_by_patch_means():
    """Virchow2-style: 1 class + 4 register tokens precede the patches; the mean excludes them."""
    spec = EncoderSpec.from_entry("demo_vit_c", REGISTRY["demo_vit_c"])
    model = build_encoder(spec).eval()
    assert model.trunk.num_prefix_tokens == 5
    x = torch.randn(2, 3, spec.input_px, spec.input_px)
    with torch.no_grad():
        tokens = model.trunk.forward_features(x)
        emb = model(x)
    n_patches = (spec.input_px // 16) ** 2
    assert tokens.shape[1] == 5 + n_patches
    torch.testing.assert_close(emb[:, :64], tokens[:, 0])
    torch.testing.assert_close(emb[:, 64:], tokens[:, 5:].mean(dim=1))
    assert not torch.allclose(emb[:, 64:], tokens[:, 1:].mean(dim=1))


def test_bad_kwarg_and_unknown_layer_name_the_encoder():
    entry = dict(REGISTRY["demo_vit_a"], kwargs={**REGISTRY["demo_vit_a"]["kwargs"], "not_a_kwarg": 3})
    with pytest.raises(ConfigError, match=r"encoder 'broken'.*not_a_kwarg"):
        build_encoder(EncoderSpec.from_entry("broken", entry))
    entry = dict(REGISTRY["demo_vit_a"], kwargs={**REGISTRY["demo_vit_a"]["kwargs"], "mlp_layer": "NoSuchMlp"})
    with pytest.raises(ConfigError, match="mlp_layer='NoSuchMlp' names no layer"):
        build_encoder(EncoderSpec.from_entry("broken", entry))


def test_schema_rejects_unknown_fields_and_incomplete_entries():
    bad = {"x": dict(REGISTRY["demo_vit_a"], colour="blue")}
    with pytest.raises(ConfigError, match="colour"):
        validate(bad, SCHEMA, "encoder registry")
    incomplete = {"x": {"arch": "vit_tiny_patch16_224", "dim": 8}}
    with pytest.raises(ConfigError, match="required"):
        validate(incomplete, SCHEMA, "encoder registry")
    validate({"mine": {"kind": "byo", "dim": 16}}, SCHEMA, "encoder registry")
    with pytest.raises(ConfigError):
        validate({"mine": {"kind": "byo", "dim": 16, "arch": "vit_tiny_patch16_224"}}, SCHEMA, "registry")

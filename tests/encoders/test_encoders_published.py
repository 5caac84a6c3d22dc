"""Every registered FM against its PUBLISHED definition (tests/encoders/fixtures/encoder_keys/published.json).

The fixture is written from the publishers' definitions, not from pathfuse (see its generate.py),
so these tests catch a registry entry, remap or preprocessing value that differs from what the
model was trained with — before anyone tiles a cohort. Reference implementations run where they
install (transformers' Dinov2Model for Phikon-v2); CTransPath and CONCH v1.5 use the published
key/shape layouts (TransPath's modified timm and MahmoodLab's conch package are not on PyPI).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from support.encoders import REPO, make_config

from pathfuse.compat import import_timm
from pathfuse.encoders.registry import EncoderSpec, build_encoder
from pathfuse.encoders.transforms import Normalize, ResizeCrop
from pathfuse.encoders.weights import WEIGHT_REMAPS, load_encoder, resample_class_pos_embed

PUBLISHED = json.loads((REPO / "tests" / "encoders" / "fixtures" / "encoder_keys" / "published.json").read_text())
REGISTRY = yaml.safe_load((REPO / "src" / "pathfuse" / "resources" / "encoders.yaml").read_text())
SLIDE = REPO.parent / "shared" / "data" / "slides" / "CMU-1-Small-Region.svs"


def expand(fm: str, max_blocks: int | None = None) -> dict[str, tuple[int, ...]]:
    """The fixture's key → shape map, block patterns expanded (optionally only the first blocks)."""
    entry = PUBLISHED[fm]
    keys = {k: tuple(v) for k, v in entry["keys"].items()}
    for rep in entry["repeats"]:
        n = rep["n"] if max_blocks is None else min(rep["n"], max_blocks)
        keys |= {rep["prefix"].format(i=i) + k: tuple(v) for i in range(n) for k, v in rep["keys"].items()}
    return keys


def spec_of(fm: str, **kwargs: object) -> EncoderSpec:
    entry = dict(REGISTRY[fm])
    entry["kwargs"] = {**entry.get("kwargs", {}), **kwargs}
    return EncoderSpec.from_entry(fm, entry)


def test_fixture_covers_every_registered_fm():
    real = {name for name, entry in REGISTRY.items() if entry.get("weights") and entry.get("kind", "timm") == "timm"}
    assert real == set(PUBLISHED)


@pytest.mark.parametrize("fm", sorted(PUBLISHED))
def test_registry_entry_has_the_published_parameters(fm):
    """Published checkpoint layout → the entry's remap → exactly the names and shapes it builds."""
    spec = spec_of(fm)
    with torch.device("meta"):
        model = build_encoder(spec)
        published = {k: torch.empty(shape) for k, shape in expand(fm).items()}
    remapped = WEIGHT_REMAPS.get(spec.remap)(published, model)
    built = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in remapped.items()}
    assert sorted(set(got) - set(built)) == [] and sorted(set(built) - set(got)) == []
    assert {k: s for k, s in got.items() if built[k] != s} == {}


@pytest.mark.parametrize("fm", sorted(PUBLISHED))
def test_registry_preprocessing_is_the_published_one(fm):
    spec, pre = spec_of(fm), PUBLISHED[fm]["preprocess"]
    assert spec.input_px == pre["input_px"]
    assert spec.crop_source_px == int(pre["input_px"] / pre["crop_pct"])  # timm: floor(size / crop_pct)
    assert spec.interpolation == pre["interpolation"]
    assert spec.mean == tuple(pre["mean"]) and spec.std == tuple(pre["std"])


def test_phikon_v2_matches_transformers_dinov2model(tmp_path):
    """Random weights in a real Dinov2Model (published width/heads/patch; 2 of 24 layers for speed)."""
    transformers = pytest.importorskip("transformers", reason="transformers (test extra) not installed")
    for image_size in (224, 518):  # 518: positions are resampled as Hugging Face does per call
        config = transformers.Dinov2Config(**{**PUBLISHED["phikon_v2"]["config"], "num_hidden_layers": 2,
                                              "image_size": image_size})
        torch.manual_seed(0)
        reference = transformers.Dinov2Model(config).eval()
        with torch.no_grad():
            for param in reference.parameters():  # layer scale etc. away from their constant init
                param.add_(torch.randn_like(param) * 0.02)
        reference.save_pretrained(tmp_path / f"phikon_{image_size}")
        entry = dict(REGISTRY["phikon_v2"], kwargs={**REGISTRY["phikon_v2"]["kwargs"], "depth": 2},
                     weights=str(tmp_path / f"phikon_{image_size}" / "model.safetensors"))
        cfg = make_config(tmp_path, encoders=("phikon_t",), extra_encoders={"phikon_t": entry})
        ours = load_encoder(cfg, "phikon_t").model
        images = torch.randn(3, 3, 224, 224)
        with torch.no_grad():
            expected = reference(pixel_values=images).last_hidden_state[:, 0]
            got = ours(images)
        assert (got - expected).abs().max().item() <= 1e-4, image_size


def _random_checkpoint(fm: str, max_blocks: int | None = None) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    state = {}
    for key, shape in expand(fm, max_blocks).items():
        if key.endswith(("num_batches_tracked", "relative_position_index")):
            state[key] = torch.zeros(shape, dtype=torch.int64)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            state[key] = torch.randn(shape, generator=generator) * 0.02
    return state


def test_ctranspath_release_layout_loads_strictly(tmp_path):
    """TransPath's ``{"model": state_dict}`` in the timm 0.5 Swin layout (downsample at stage end)."""
    path = tmp_path / "weights" / "ctranspath.pth"
    path.parent.mkdir()
    torch.save({"model": _random_checkpoint("ctranspath")}, path)
    cfg = make_config(tmp_path, encoders=("ctranspath",), embedding={"weights_dir": str(tmp_path / "weights")},
                      extra_encoders={"ctranspath": dict(REGISTRY["ctranspath"], weights="ctranspath.pth")})
    model = load_encoder(cfg, "ctranspath").model
    with torch.no_grad():
        out = model(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 768) and torch.isfinite(out).all()


def test_conch_v15_vision_tower_layout_loads_strictly(tmp_path):
    """MahmoodLab's trunk + attention-pooling names (2 of 24 blocks for speed, published widths)."""
    state = _random_checkpoint("conch_v15", max_blocks=2)
    path = tmp_path / "pytorch_model_vision.bin"
    torch.save(state, path)
    entry = dict(REGISTRY["conch_v15"], kwargs={**REGISTRY["conch_v15"]["kwargs"], "depth": 2}, weights=str(path))
    cfg = make_config(tmp_path, encoders=("conch_t",), extra_encoders={"conch_t": entry})
    model = load_encoder(cfg, "conch_t").model
    # The 224-px position table is resampled once the way the reference does it on each call.
    side = state["trunk.pos_embed"][:, 1:].reshape(1, 14, 14, -1).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(side, scale_factor=(28.1 / 14, 28.1 / 14), mode="bicubic")
    torch.testing.assert_close(model.trunk.pos_embed[0, 1:], expected.permute(0, 2, 3, 1).reshape(-1, 1024))
    with torch.no_grad():
        out = model(torch.randn(1, 3, 448, 448))
    assert out.shape == (1, 768) and torch.isfinite(out).all()


def test_resampling_is_identity_on_the_native_grid():
    table = torch.randn(1, 1 + 14 * 14, 8)
    assert resample_class_pos_embed(table, (14, 14)) is table


@pytest.fixture(scope="module")
def real_tiles() -> list[np.ndarray]:
    if not SLIDE.is_file():
        pytest.skip(f"real slide {SLIDE} is absent (shared test data are not part of a clone)")
    import openslide

    with openslide.OpenSlide(str(SLIDE)) as slide:
        square = slide.read_region((800, 1200), 0, (256, 256)).convert("RGB")
        oblong = slide.read_region((1300, 700), 0, (300, 260)).convert("RGB")
    return [np.asarray(square), np.asarray(oblong)]


#: Tolerance after normalisation, in units of the channel std. PIL (torchvision) and torch's
#: antialiased resamplers round differently: measured on the CMU-1 tiles, mean |diff| ≤ 0.001 and
#: max ≤ 0.035 (one or two 8-bit levels). A crop shifted by one pixel gave mean 0.056, max 1.8.
MEAN_TOL, MAX_TOL = 0.005, 0.1


@pytest.mark.parametrize("fm", sorted(PUBLISHED))
def test_preprocessing_matches_timm_from_the_published_cfg(fm, real_tiles):
    """The pathfuse transform equals ``create_transform(resolve_data_config(published pretrained_cfg))``."""
    from PIL import Image

    timm = import_timm()
    pre, spec = PUBLISHED[fm]["preprocess"], spec_of(fm)
    data_cfg = timm.data.resolve_data_config(pretrained_cfg={
        "input_size": (3, pre["input_px"], pre["input_px"]), "interpolation": pre["interpolation"],
        "crop_pct": pre["crop_pct"], "crop_mode": "center", "mean": tuple(pre["mean"]), "std": tuple(pre["std"])})
    reference = timm.data.create_transform(**data_cfg, is_training=False)
    normalise = Normalize(spec, torch.device("cpu"), channels_last=False)
    for tile in real_tiles:
        expected = reference(Image.fromarray(tile))
        got = normalise(ResizeCrop.for_encoder(spec)(tile)[None])[0]
        assert got.shape == expected.shape == (3, pre["input_px"], pre["input_px"])
        diff = (got - expected).abs()
        assert diff.mean().item() < MEAN_TOL and diff.max().item() < MAX_TOL, (fm, tile.shape, diff.mean(), diff.max())

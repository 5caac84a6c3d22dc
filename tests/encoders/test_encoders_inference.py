"""Preprocessing and the device/precision choice of the embedding loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from support.encoders import REGISTRY

from pathfuse.config import section_settings
from pathfuse.encoders.inference import Embedder, select_runtime
from pathfuse.encoders.registry import EncoderSpec, build_encoder
from pathfuse.encoders.transforms import Normalize, ResizeCrop
from pathfuse.encoders.weights import LoadedEncoder
from pathfuse.settings import EmbeddingSettings

SETTINGS = {"device": "auto", "cpu_precision": "fp32", "gpu_precision": "auto", "channels_last": "auto",
            "compile": False}


def embedding(**values: object) -> EmbeddingSettings:
    """The embedding section: ``values`` over the schema defaults."""
    return section_settings(EmbeddingSettings, **values)


def test_resize_crop_matches_pil_and_keeps_uint8():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (256, 300, 3), dtype=np.uint8)
    out = ResizeCrop(resize_px=224, crop_px=200, interpolation="bilinear")(image)
    assert out.dtype == torch.uint8 and out.shape == (3, 200, 200)
    width = round(300 * 224 / 256)
    reference = np.asarray(Image.fromarray(image).resize((width, 224), Image.Resampling.BILINEAR))
    top, left = (224 - 200) // 2, (width - 200) // 2
    reference = reference[top:top + 200, left:left + 200]
    assert np.abs(out.permute(1, 2, 0).numpy().astype(int) - reference.astype(int)).max() <= 2


def test_normalize_is_mean_std_on_unit_range():
    spec = EncoderSpec.from_entry("demo_vit_a", REGISTRY["demo_vit_a"])
    batch = torch.randint(0, 255, (2, 3, 8, 8), dtype=torch.uint8)
    out = Normalize(spec, torch.device("cpu"), channels_last=True)(batch)
    mean, std = torch.tensor(spec.mean).view(1, 3, 1, 1), torch.tensor(spec.std).view(1, 3, 1, 1)
    torch.testing.assert_close(out, (batch.float() / 255 - mean) / std)
    assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_runtime_falls_back_to_cpu_and_refuses_missing_gpu():
    runtime = select_runtime(embedding(**SETTINGS), preferred_precision="bf16")
    assert runtime.device.type == "cpu" and runtime.precision == "fp32" and runtime.autocast_dtype is None
    assert not runtime.channels_last  # auto: channels-last only pays off on a GPU
    assert select_runtime(embedding(**{**SETTINGS, "cpu_precision": "bf16"}), "fp32").autocast_dtype == torch.bfloat16
    with pytest.raises(RuntimeError, match="no GPU"):
        select_runtime(embedding(**{**SETTINGS, "device": "cuda"}), "bf16")


def test_channels_last_does_not_change_embeddings():
    spec = EncoderSpec.from_entry("demo_vit_c", REGISTRY["demo_vit_c"])
    torch.manual_seed(0)
    model = build_encoder(spec).eval()
    images = torch.randint(0, 255, (3, 3, spec.input_px, spec.input_px), dtype=torch.uint8)
    outs = []
    for channels_last in (False, True):
        loaded = LoadedEncoder(spec=spec, model=model, weights_sha256="", weights_source="")
        runtime = select_runtime(embedding(**{**SETTINGS, "device": "cpu", "channels_last": channels_last}), "fp32")
        outs.append(Embedder(loaded, runtime)(images))
    assert outs[0].shape == (3, 128)
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)

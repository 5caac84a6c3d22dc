"""Encoders built from ``src/pathfuse/resources/encoders.yaml``: a timm trunk plus a named embedding rule.

The registry is data (architecture, kwargs, how the embedding is formed, preprocessing,
precision, weight file); this module turns one entry into a module that maps a normalised
image batch to one embedding per image. Building never touches weights (see :mod:`.weights`),
so every entry can be built — on the meta device, without memory — in a test, which catches a
wrong kwarg or embedding dimension before anyone downloads a checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import torch
from torch import nn

from pathfuse.compat import import_timm
from pathfuse.config import Config, ConfigError
from pathfuse.encoders.layers import HEADS, LAYERS
from pathfuse.encoders.levels import LEVEL_RULES, N_LEVELS
from pathfuse.registry import Registry

#: A model built by ``timm.create_model``. timm ships no type information, so what the embedding
#: rules and weight remaps use of it (``forward_features``, ``forward_head``, ``num_prefix_tokens``,
#: ``patch_embed``) is untyped; ``nn.Module`` would type each of those as a submodule-or-tensor lookup.
TimmTrunk: TypeAlias = Any

#: How token outputs become one embedding: ``rule(tokens, trunk, head) -> [B, dim]``.
EmbeddingRule = Callable[[torch.Tensor, TimmTrunk, "nn.Module | None"], torch.Tensor]
EMBEDDING_RULES: Registry[EmbeddingRule] = Registry("embedding rule")

PRECISIONS = ("fp32", "bf16", "fp16")



def default_level_blocks(depth: int) -> tuple[int, ...]:
    """The 1-based blocks whose outputs are the low, mid and high levels of a ``depth``-block trunk.

    Block number ⌊k·(depth − 1)/3⌋ + 1 for k = 1, 2, 3 (i.e. 0-based index ⌊k·(depth − 1)/3⌋):
    blocks 8, 16, 24 of a 24-block ViT-L and 14, 27, 40 of a 40-block ViT-g — the 0-based indices
    7/15/23 and 13/26/39 the Shazam authors' public code uses — and 1, 2, 3 of a 3-block demo ViT.
    A trunk of fewer than 3 blocks has no three distinct levels.
    """
    if depth < N_LEVELS:
        raise ConfigError(f"a trunk of {depth} block(s) has no {N_LEVELS} distinct levels (low, mid, high)")
    return tuple(k * (depth - 1) // N_LEVELS + 1 for k in range(1, N_LEVELS + 1))


@EMBEDDING_RULES.register("cls")
def cls_token(tokens: torch.Tensor, trunk: TimmTrunk, head: nn.Module | None) -> torch.Tensor:
    """The class token (UNI, GigaPath, H-optimus, Phikon-v2, Lunit, Kaiko)."""
    return tokens[:, 0]


@EMBEDDING_RULES.register("mean_patch")
def mean_patch(tokens: torch.Tensor, trunk: TimmTrunk, head: nn.Module | None) -> torch.Tensor:
    """Mean of the patch tokens; class and register tokens (``num_prefix_tokens``) are skipped."""
    return tokens[:, trunk.num_prefix_tokens:].mean(dim=1)


@EMBEDDING_RULES.register("cls_mean_patch")
def cls_mean_patch(tokens: torch.Tensor, trunk: TimmTrunk, head: nn.Module | None) -> torch.Tensor:
    """Class token ⊕ mean of patch tokens (Virchow2: 1280 + 1280 = 2560-d), registers skipped."""
    return torch.cat([tokens[:, 0], tokens[:, trunk.num_prefix_tokens:].mean(dim=1)], dim=-1)


@EMBEDDING_RULES.register("pooled")
def pooled(tokens: torch.Tensor, trunk: TimmTrunk, head: nn.Module | None) -> torch.Tensor:
    """The trunk's own global pooling (``forward_head(pre_logits=True)``), e.g. Swin's average."""
    return trunk.forward_head(tokens, pre_logits=True)


@EMBEDDING_RULES.register("attn_pool")
def attention_pooled(tokens: torch.Tensor, trunk: TimmTrunk, head: nn.Module | None) -> torch.Tensor:
    """A learned attention-pooling head over all tokens (CONCH v1.5)."""
    if head is None:
        raise RuntimeError("embedding rule 'attn_pool' needs a 'head' in the encoder entry")
    return head(tokens)


@dataclass(frozen=True)
class EncoderSpec:
    """One encoder registry entry with its defaults applied."""

    name: str
    dim: int
    kind: str = "timm"
    arch: str = ""
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    embedding: str = "cls"
    head: Mapping[str, Any] | None = None
    input_px: int = 224
    resize_px: int | None = None
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    precision: str = "fp32"
    weights: str | None = None
    remap: str = "timm"
    weights_url: str | None = None
    description: str = ""
    levels: tuple[int, ...] | None = None  # 1-based level blocks; None = default_level_blocks(depth)

    @classmethod
    def from_entry(cls, name: str, entry: Mapping[str, Any]) -> EncoderSpec:
        """Build from a (schema-validated) registry entry."""
        values = dict(entry)
        for key in ("mean", "std"):
            if key in values:
                values[key] = tuple(float(v) for v in values[key])
        values["kwargs"] = dict(values.get("kwargs") or {})
        if values.get("levels") is not None:
            values["levels"] = tuple(int(b) for b in values["levels"])
        return cls(name=name, **values)

    @property
    def is_byo(self) -> bool:
        """Bring-your-own features: nothing to build, features are imported (see :mod:`.byo`)."""
        return self.kind == "byo"

    @property
    def crop_source_px(self) -> int:
        """Side the shorter image side is resized to before the centre crop."""
        return self.resize_px or self.input_px


def encoder_spec(cfg: Config, name: str) -> EncoderSpec:
    """The spec of encoder ``name`` from the run's encoder registry."""
    return EncoderSpec.from_entry(name, cfg.encoder_entry(name))


class EncoderModel(nn.Module):
    """timm trunk → token sequence → embedding rule (optionally through a pooling head).

    With ``level_blocks`` set (:meth:`with_levels`), the forward pass also returns the level
    features: ``[B, dim · 3]`` = the embedding, then the same token rule applied to the output
    tokens of the low and the mid level block. The high level is the embedding
    itself (the last block's output after the trunk's final norm), so it is not repeated; the lower
    levels are raw block outputs, without the final norm, which was fitted to the last block only.
    """

    def __init__(self, trunk: TimmTrunk, rule: str, head: nn.Module | None = None) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = head
        self.rule_name = rule
        self._rule = EMBEDDING_RULES.get(rule)
        self.level_blocks: tuple[int, ...] | None = None

    def with_levels(self, blocks: tuple[int, ...] | None) -> EncoderModel:
        """Also output the level features of ``blocks`` (1-based; None = the depth's default)."""
        n_blocks = len(getattr(self.trunk, "blocks", ()))
        if self.rule_name not in LEVEL_RULES or not n_blocks:
            raise ConfigError(f"embedding rule {self.rule_name!r} on {type(self.trunk).__name__} has no level features")
        blocks = blocks or default_level_blocks(n_blocks)
        if len(blocks) != N_LEVELS or list(blocks) != sorted(set(blocks)) or blocks[-1] != n_blocks or blocks[0] < 1:
            raise ConfigError(f"level blocks {list(blocks)} must be {N_LEVELS} increasing 1-based blocks ending "
                              f"with the last ({n_blocks})")
        self.level_blocks = tuple(blocks)
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images [B, 3, H, W] → one embedding per image [B, dim] (+ levels, see above)."""
        if self.level_blocks is None:
            return self._rule(self.trunk.forward_features(images), self.trunk, self.head)
        indices = [b - 1 for b in self.level_blocks[:-1]]
        final, lower = self.trunk.forward_intermediates(images, indices=indices, norm=False, output_fmt="NLC",
                                                         return_prefix_tokens=True)
        levels = [self._rule(torch.cat([prefix, patches], dim=1), self.trunk, self.head) for patches, prefix in lower]
        return torch.cat([self._rule(final, self.trunk, self.head), *levels], dim=1)


def resolve_layer_kwargs(spec: EncoderSpec) -> dict[str, Any]:
    """Replace layer names in ``kwargs`` (keys ending in ``_layer``) by the classes they name.

    Looked up in :data:`.layers.LAYERS`, then ``timm.layers``, then ``torch.nn`` — so YAML can
    say ``mlp_layer: SwiGLUPacked`` and ``act_layer: SiLU``.
    """
    timm = import_timm()
    kwargs = dict(spec.kwargs)
    for key, value in spec.kwargs.items():
        if not (key.endswith("_layer") and isinstance(value, str)):
            continue
        if value in LAYERS:
            kwargs[key] = LAYERS.get(value)
        elif hasattr(timm.layers, value):
            kwargs[key] = getattr(timm.layers, value)
        elif hasattr(nn, value):
            kwargs[key] = getattr(nn, value)
        else:
            raise ConfigError(
                f"encoder {spec.name!r}: kwargs.{key}={value!r} names no layer in pathfuse "
                f"({', '.join(LAYERS.names())}), timm.layers or torch.nn"
            )
    return kwargs


def build_encoder(spec: EncoderSpec) -> EncoderModel:
    """Build the architecture with timm's random initialisation (on the current device).

    Wrap in ``with torch.device("meta"):`` to build without memory. ``num_classes`` is forced to 0
    so no classifier is built; weights are loaded separately by :func:`.weights.load_encoder`.
    """
    if spec.is_byo:
        raise ConfigError(f"encoder {spec.name!r} is kind 'byo': its features are imported, not computed")
    timm = import_timm()
    kwargs = resolve_layer_kwargs(spec)
    kwargs["num_classes"] = 0
    try:
        trunk = timm.create_model(spec.arch, pretrained=False, **kwargs)
    except Exception as err:  # timm raises TypeError/RuntimeError/KeyError for bad kwargs or names
        raise ConfigError(
            f"encoder {spec.name!r}: timm could not build {spec.arch!r} with kwargs {dict(spec.kwargs)}: {err}"
        ) from err
    head = None
    if spec.head is not None:
        head_kwargs = {k: v for k, v in spec.head.items() if k != "type"}
        head = HEADS.get(spec.head["type"])(context_dim=trunk.num_features, **head_kwargs)
    if spec.embedding in ("cls", "cls_mean_patch") and getattr(trunk, "cls_token", None) is None:
        raise ConfigError(f"encoder {spec.name!r}: embedding {spec.embedding!r} needs a class token, "
                          f"but {spec.arch!r} with these kwargs has none")
    return EncoderModel(trunk, spec.embedding, head)


def output_dim(model: EncoderModel, spec: EncoderSpec) -> int:
    """Embedding width the model produces for one ``input_px`` image (works on meta modules)."""
    device = next(model.parameters()).device
    with torch.no_grad():
        out = model(torch.zeros(1, 3, spec.input_px, spec.input_px, device=device))
    if out.ndim != 2:
        raise ConfigError(f"encoder {spec.name!r}: embedding rule {spec.embedding!r} gave shape "
                          f"{tuple(out.shape)}, expected [batch, dim]")
    return int(out.shape[1])

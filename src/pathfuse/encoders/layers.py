"""Modules some foundation models need beyond what timm ships.

* :class:`ConvStem` — CTransPath replaces Swin-T's 4×4 patchify convolution with a small
  convolutional stem; timm's ``SwinTransformer`` accepts it through ``embed_layer``.
* :class:`AttentionPoolHead` — CONCH v1.5's image embedding is not the CLS token but a learned
  query attending over every output token of the ViT-L trunk, projected to 768-d.

Both are named in ``src/pathfuse/resources/encoders.yaml`` (``kwargs.embed_layer: ctranspath_conv_stem``,
``head: {type: attn_pool, ...}``) and looked up in the registries below, so the registry stays
plain data. Parameter names follow the upstream checkpoints so weights load without renaming
(CONCH v1.5's head keys are renamed by the ``conch_v15`` remap in :mod:`.weights`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pathfuse.registry import Registry

#: Layers that ``kwargs`` entries ending in ``_layer`` may name besides timm's and torch's own.
LAYERS: Registry[type[nn.Module]] = Registry("encoder layer")

#: Token-pooling heads an encoder's ``head.type`` may name.
HEADS: Registry[type[nn.Module]] = Registry("encoder head")


@LAYERS.register("ctranspath_conv_stem")
class ConvStem(nn.Module):
    """CTransPath's patch embedding: two stride-2 3×3 conv–BN–ReLU blocks and a 1×1 conv.

    Accepts timm's ``PatchEmbed`` keyword arguments so ``SwinTransformer(embed_layer=ConvStem)``
    builds; it returns NHWC tokens as timm ≥ 1.0's Swin expects.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int | tuple[int, int] = 4,
        in_chans: int = 3,
        embed_dim: int = 96,
        norm_layer: Any = None,
        strict_img_size: bool = True,
        output_fmt: str | None = "NHWC",
        device: Any = None,
        dtype: Any = None,
        **_: Any,
    ) -> None:
        super().__init__()
        size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        patch = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
        if patch != (4, 4):
            raise ValueError(f"ctranspath_conv_stem downsamples by 4 (two stride-2 convs), not {patch}")
        factory = {"device": device, "dtype": dtype}
        self.img_size = size
        self.patch_size = patch
        self.grid_size = (size[0] // 4, size[1] // 4)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.strict_img_size = strict_img_size
        self.output_fmt = output_fmt
        layers: list[nn.Module] = []
        width_in, width_out = in_chans, embed_dim // 8
        for _stage in range(2):
            layers += [
                nn.Conv2d(width_in, width_out, kernel_size=3, stride=2, padding=1, bias=False, **factory),
                nn.BatchNorm2d(width_out, **factory),
                nn.ReLU(inplace=True),
            ]
            width_in, width_out = width_out, width_out * 2
        layers.append(nn.Conv2d(width_in, embed_dim, kernel_size=1, **factory))
        self.proj = nn.Sequential(*layers)
        self.norm = norm_layer(embed_dim, **factory) if norm_layer else nn.Identity()

    def set_input_size(self, img_size: Any = None, patch_size: Any = None) -> None:
        """Follow Swin's ``set_input_size`` (only the grid changes; the stem has no size)."""
        if img_size is not None:
            size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
            self.img_size = size
            self.grid_size = (size[0] // 4, size[1] // 4)
            self.num_patches = self.grid_size[0] * self.grid_size[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images [B, C, H, W] → tokens [B, H/4, W/4, D] (NHWC, Swin's layout) or [B, HW/16, D]."""
        x = self.proj(x)
        x = x.permute(0, 2, 3, 1) if self.output_fmt == "NHWC" else x.flatten(2).transpose(1, 2)
        return self.norm(x)


class _AttentionPool(nn.Module):
    """The parameters of :class:`AttentionPoolHead`'s pooler, named as in the upstream checkpoint.

    A module of its own (not attributes set on a bare ``nn.Module``) so that its parts are typed;
    the creation order, and so the random initialisation and the state-dict keys, is unchanged.
    """

    def __init__(self, context_dim: int, d_model: int, n_queries: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(n_queries, d_model))
        self.ln_k = nn.LayerNorm(context_dim)
        self.ln_q = nn.LayerNorm(d_model)
        self.to_q = nn.Linear(d_model, d_model, bias=False)
        self.to_kv = nn.Linear(context_dim, 2 * d_model, bias=False)
        self.to_out = nn.Linear(d_model, d_model, bias=False)


@HEADS.register("attn_pool")
class AttentionPoolHead(nn.Module):
    """One learned query attends over all trunk tokens (CoCa-style pooler), then LayerNorm.

    ``pool.*`` holds the query, the two LayerNorms and the q/kv/out projections (bias-free);
    ``norm`` is the final LayerNorm whose output is the embedding (``d_model``-d).
    """

    def __init__(self, context_dim: int, d_model: int = 768, n_heads: int = 8, n_queries: int = 1) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"attn_pool: d_model {d_model} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.pool = _AttentionPool(context_dim, d_model, n_queries)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Trunk tokens [B, N, context_dim] → the pooled, normalised embedding [B, d_model]."""
        batch = tokens.shape[0]
        pool = self.pool
        q = pool.to_q(pool.ln_q(pool.query)).expand(batch, -1, -1)
        k, v = pool.to_kv(pool.ln_k(tokens)).chunk(2, dim=-1)
        q, k, v = (t.unflatten(-1, (self.n_heads, -1)).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
        return self.norm(pool.to_out(out)[:, 0])

"""Encoder weights: local files only, strict key checks, and a hash for provenance.

Foundation-model checkpoints are gated downloads; a pipeline that silently fetches (or silently
falls back to random weights) produces features nobody can reproduce. So: the hub is set
offline, a missing file stops with where to get it, any missing or unexpected key is an error
that lists them, and the SHA-256 of the weights goes into every output's metadata.
Demo encoders (``weights: null``) get timm's random initialisation under a seed derived from
the run seed and the encoder name, so their outputs are reproducible too.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pathfuse.config import Config
from pathfuse.encoders.registry import EncoderModel, EncoderSpec, TimmTrunk, build_encoder, encoder_spec
from pathfuse.registry import Registry
from pathfuse.reproducibility import derive_seed, file_sha256

log = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]
#: Checkpoint key conventions → this package's module names (``trunk.*``, ``head.*``).
WEIGHT_REMAPS: Registry[Callable[[StateDict, EncoderModel], StateDict]] = Registry("weight remap")
_WRAPPER_KEYS = ("state_dict", "model", "teacher", "module")


class WeightsError(RuntimeError):
    """Weights cannot be loaded; the message names the encoder, the file and the fix."""


@dataclass(frozen=True)
class LoadedEncoder:
    """A ready-to-run encoder (eval mode, on CPU) and the provenance of its weights."""

    spec: EncoderSpec
    model: EncoderModel
    weights_sha256: str
    weights_source: str


def resolve_weights_path(cfg: Config, spec: EncoderSpec) -> Path | None:
    """The weight file of ``spec``: absolute, or relative to ``embedding.weights_dir``."""
    if spec.weights is None:
        return None
    path = Path(os.path.expandvars(os.path.expanduser(spec.weights)))
    if not path.is_absolute():
        path = Path(cfg.settings.embedding.weights_dir) / path
    return path


def load_encoder(cfg: Config, name: str) -> LoadedEncoder:
    """Build encoder ``name`` and give it its weights (local file, or seeded random for demos)."""
    spec = encoder_spec(cfg, name)
    path = resolve_weights_path(cfg, spec)
    if path is None:
        # 63 bits, ":"-joined: the form demo encoders were always seeded with (their embeddings).
        seed = derive_seed(cfg.seed, "encoder", name, bits=63, separator=":")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_encoder(spec)
        source = f"random-init seed={seed}"
        sha = state_sha256(model)
    else:
        if not path.is_file():
            raise WeightsError(missing_weights_message(spec, path))
        model = build_encoder(spec)
        load_weights(model, spec, path)
        source = str(path)
        sha = file_sha256(path)
    model.eval().requires_grad_(False)
    log.info("encoder %s ready (%s, sha256 %s)", name, source, sha[:12])
    return LoadedEncoder(spec=spec, model=model, weights_sha256=sha, weights_source=source)


def missing_weights_message(spec: EncoderSpec, path: Path) -> str:
    """What to do about a missing weight file: where to get it and where to put it.

    Shared by the loader's error and the doctor's FAIL row, so both give the same advice.
    """
    where = spec.weights_url or "the model's publisher (see docs/encoders.md)"
    return (
        f"encoder {spec.name!r}: weight file {path} not found. pathfuse never downloads weights: "
        f"get them from {where} (accept the licence there), save the file as {path}, or point "
        "'weights' in the encoder registry (absolute, or relative to embedding.weights_dir) at "
        "your copy. See docs/encoders.md."
    )


def read_checkpoint(path: Path) -> StateDict:
    """Tensors of a checkpoint: safetensors, or ``torch.load(weights_only=True)`` for .bin/.pth.

    Training wrappers (``{"model": ...}``, ``{"state_dict": ...}``, ``{"teacher": ...}``) and a
    DataParallel ``module.`` prefix are removed.
    """
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        obj: object = load_file(str(path))
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # pickle errors differ by content; all mean "not a plain state dict"
            lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
            cause = next((ln for ln in lines if "Unpickler error" in ln), lines[0] if lines else repr(err))
            raise WeightsError(
                f"{path}: torch.load(weights_only=True) refused the file ({cause}). pathfuse does not "
                "unpickle arbitrary objects; re-save the state dict as safetensors"
            ) from err
    while isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            raise WeightsError(f"{path}: no state dict found; top-level keys: {sorted(obj)[:20]}")
        obj = inner
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path}: expected a state dict, found {type(obj).__name__}")
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_weights(model: EncoderModel, spec: EncoderSpec, path: Path) -> None:
    """Load ``path`` into ``model`` through the spec's remap; any key mismatch is an error."""
    state = WEIGHT_REMAPS.get(spec.remap)(read_checkpoint(path), model)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches raise even with strict=False
        raise WeightsError(f"encoder {spec.name!r}: {path} does not fit the architecture: {err}") from err
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:
        raise WeightsError(
            f"encoder {spec.name!r}: {path} does not match {spec.arch!r} (remap {spec.remap!r}); "
            f"{len(missing)} missing key(s): {_listing(missing)}; "
            f"{len(unexpected)} unexpected key(s): {_listing(unexpected)}. "
            "Check the registry's arch/kwargs/remap against the checkpoint."
        )


def _listing(keys: list[str], limit: int = 20) -> str:
    shown = ", ".join(keys[:limit])
    return f"[{shown}{', ...' if len(keys) > limit else ''}]"


def state_sha256(model: nn.Module) -> str:
    """SHA-256 over parameter names and bytes: identifies seeded random weights."""
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


# ----------------------------------------------------------------------------- remaps
def _timm_filter(state: StateDict, trunk: TimmTrunk) -> StateDict:
    """Apply the trunk's own timm checkpoint filter (pos-embed resampling, old Swin layouts)."""
    module = sys.modules.get(type(trunk).__module__)
    fn = getattr(module, "checkpoint_filter_fn", None)
    return dict(fn(state, trunk)) if fn is not None else state


@WEIGHT_REMAPS.register("timm")
def remap_timm(state: StateDict, model: EncoderModel) -> StateDict:
    """Checkpoints in timm's own naming (UNI, Virchow2, GigaPath, H-optimus, Lunit, Kaiko...)."""
    return {f"trunk.{k}": v for k, v in _timm_filter(state, model.trunk).items()}


def resample_class_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int], offset: float = 0.0) -> torch.Tensor:
    """Resample a ``[1, 1 + side², D]`` (class + square patch grid) position table to ``grid``.

    Done once at load time exactly as the reference implementations do it on every call, so
    the features match theirs: bicubic in float32 without antialiasing — to a target ``size``
    (Hugging Face ``Dinov2Model``, ``offset=0``) or by the DINO ``scale_factor`` of
    ``(grid + 0.1) / side`` (MahmoodLab's CONCH v1.5 trunk, ``offset=0.1``). timm's own filter
    antialiases, which changes the table when shrinking it.
    """
    cls_pos, patches = pos_embed[:, :1], pos_embed[:, 1:]
    side, dim = math.isqrt(patches.shape[1]), patches.shape[2]
    if side * side != patches.shape[1] or (side, side) == tuple(grid):
        return pos_embed
    table = patches.reshape(1, side, side, dim).permute(0, 3, 1, 2).float()
    if offset:
        scale = ((grid[0] + offset) / side, (grid[1] + offset) / side)
        table = F.interpolate(table, scale_factor=scale, mode="bicubic", align_corners=False)
    else:
        table = F.interpolate(table, size=tuple(grid), mode="bicubic", align_corners=False)
    table = table.permute(0, 2, 3, 1).reshape(1, -1, dim).to(pos_embed.dtype)
    return torch.cat([cls_pos, table], dim=1)


def _resample_positions(state: StateDict, trunk: TimmTrunk, key: str, offset: float) -> StateDict:
    if key in state and getattr(trunk, "pos_embed", None) is not None:
        grid = tuple(trunk.patch_embed.grid_size)
        state = {**state, key: resample_class_pos_embed(state[key], grid, offset)}
    return state


@WEIGHT_REMAPS.register("conch_v15")
def remap_conch_v15(state: StateDict, model: EncoderModel) -> StateDict:
    """CONCH v1.5 vision tower: ``trunk.*`` (timm ViT-L), ``attn_pool_contrast.*``, ``ln_contrast.*``."""
    state = _resample_positions(state, model.trunk, "trunk.pos_embed", offset=0.1)
    trunk = {k[len("trunk."):]: v for k, v in state.items() if k.startswith("trunk.")}
    out = {f"trunk.{k}": v for k, v in _timm_filter(trunk, model.trunk).items()}
    for key, value in state.items():
        if key.startswith("attn_pool_contrast."):
            out["head.pool." + key[len("attn_pool_contrast."):]] = value
        elif key.startswith("ln_contrast."):
            out["head.norm." + key[len("ln_contrast."):]] = value
        elif not key.startswith("trunk."):
            out[key] = value  # reported as unexpected
    return out


_HF_DINOV2_RENAMES = [
    (r"^embeddings\.cls_token$", "cls_token"),
    (r"^embeddings\.position_embeddings$", "pos_embed"),
    (r"^embeddings\.register_tokens$", "reg_token"),
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^encoder\.layer\.(\d+)\.norm([12])\.", r"blocks.\1.norm\2."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"blocks.\1.attn.proj."),
    (r"^encoder\.layer\.(\d+)\.layer_scale([12])\.lambda1$", r"blocks.\1.ls\2.gamma"),
    (r"^encoder\.layer\.(\d+)\.mlp\.(fc[12])\.", r"blocks.\1.mlp.\2."),
    (r"^encoder\.layer\.(\d+)\.mlp\.weights_in\.", r"blocks.\1.mlp.fc1."),
    (r"^encoder\.layer\.(\d+)\.mlp\.weights_out\.", r"blocks.\1.mlp.fc2."),
    (r"^layernorm\.", "norm."),
]
_HF_QKV = re.compile(r"^encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.(weight|bias)$")


@WEIGHT_REMAPS.register("hf_dinov2")
def remap_hf_dinov2(state: StateDict, model: EncoderModel) -> StateDict:
    """Hugging Face ``Dinov2Model`` naming (Phikon-v2) → timm ViT; q, k, v fused into ``qkv``."""
    state = {k.removeprefix("dinov2."): v for k, v in state.items()}
    state = _resample_positions(state, model.trunk, "embeddings.position_embeddings", offset=0.0)
    out: StateDict = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key == "embeddings.mask_token":
            continue  # masked-image-modelling token, unused at inference
        match = _HF_QKV.match(key)
        if match:
            layer, part, kind = match.groups()
            qkv.setdefault((layer, kind), {})[part] = value
            continue
        new = key
        for pattern, repl in _HF_DINOV2_RENAMES:
            new, n = re.subn(pattern, repl, new)
            if n:
                break
        out[new] = value
    for (layer, kind), parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            out[f"encoder.layer.{layer}.attention.attention.{kind}"] = next(iter(parts.values()))
            continue  # incomplete triple: surfaces as missing/unexpected keys
        out[f"blocks.{layer}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]])
    return remap_timm(out, model)

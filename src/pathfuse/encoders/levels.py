"""Level features: a teacher's low and mid block outputs, stored beside its final embedding.

``shazam_levels`` (the Shazam authors' current model) reads each teacher at three depths. The
high level is the encoder's own embedding (``features``); the low and mid levels are the same
token rule applied to earlier blocks' outputs (:meth:`.registry.EncoderModel.with_levels`),
stored as ``levels`` float16 [n, 2, dim] in the same safetensors file. They are written only when
``embedding.levels`` asks for them (``tiles``: tile datasets; ``true``: slides too), since they
triple the feature storage (docs/scaling.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # numpy only for the type: the planner imports this module
    import numpy as np

#: How many depths a teacher contributes to ``shazam_levels``: low, mid and high.
N_LEVELS = 3
#: Key of the lower levels in a feature file (float16 [n, N_LEVELS − 1, dim]: low, mid).
LEVELS_KEY = "levels"
#: The level names, low to high, in the order a teacher's level features are used.
LEVEL_NAMES = ("low", "mid", "high")
#: Embedding rules that also give a level feature: the same token rule applied to a block's output
#: tokens, so a level has the embedding's width. ``pooled`` (Swin: stages of different widths) and
#: ``attn_pool`` (a head trained on the final tokens only) have no level rule.
LEVEL_RULES = ("cls", "mean_patch", "cls_mean_patch")


def level_problem(name: str, entry: Mapping[str, Any]) -> str | None:
    """Why encoder ``name`` (its registry entry) cannot give level features; None when it can.

    Read from the entry alone (no torch), so the start-up check can refuse a run before any job.
    """
    if entry.get("kind") == "byo":
        return f"encoder {name!r} has imported (bring-your-own) features, which have no levels"
    if entry.get("embedding") not in LEVEL_RULES:
        return (f"encoder {name!r}: embedding rule {entry.get('embedding')!r} has no level rule "
                f"(levels exist for {', '.join(LEVEL_RULES)})")
    depth = (entry.get("kwargs") or {}).get("depth")
    if not entry.get("levels") and isinstance(depth, int) and depth < N_LEVELS:
        return f"encoder {name!r} has {depth} block(s); {N_LEVELS} levels need at least {N_LEVELS}"
    return None


def writes_levels(setting: bool | str, stage: Literal["tiles", "slides"]) -> bool:
    """Whether ``embedding.levels`` (false | tiles | true) asks the ``stage`` to write level features."""
    return setting is True or (setting == "tiles" and stage == "tiles")


def split_levels(out: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray | None]:
    """An embedder's rows ``[n, dim]`` or ``[n, N_LEVELS·dim]`` → (embedding, lower levels [n, 2, dim] or None)."""
    if out.shape[1] == dim:
        return out, None
    return out[:, :dim], out[:, dim:].reshape(len(out), N_LEVELS - 1, dim)


def has_levels(path: Path) -> bool:
    """Whether a feature file holds level features (a file embedded without them must be embedded again)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as fh:
        keys = fh.keys()  # a safetensors handle has no __contains__
    return LEVELS_KEY in keys

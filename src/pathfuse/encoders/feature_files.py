"""The per-slide feature file format, shared by computed and imported features.

Computed (:mod:`~pathfuse.encoders.extract`) and imported (:mod:`~pathfuse.encoders.byo`) features
share its version, the test whether a file is finished, and the feature shard manifest's rows.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Version of the per-slide feature file layout (tensors + metadata keys).
FEATURES_SCHEMA_VERSION = 1


def finished_features(path: Path, encoder: str) -> tuple[int, int, dict[str, str]] | None:
    """``(n_tiles, dim, metadata)`` of a complete feature file for ``encoder``, or None if it must be made."""
    if not path.exists():
        return None
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np") as fh:
            metadata = fh.metadata() or {}
            shape = fh.get_slice("features").get_shape()
    except (SafetensorError, OSError, KeyError) as err:  # not ours or damaged: re-make it atomically
        log.warning("%s: unreadable (%s); embedding the slide again", path, err)
        return None
    if metadata.get("encoder") != encoder:
        raise ValueError(f"{path}: holds features of encoder {metadata.get('encoder')!r}, expected {encoder!r}; "
                         "delete it")
    return int(shape[0]), int(shape[1]), metadata


def failure_reason(n_failed: int, policy: str) -> str:
    """The manifest ``reason`` of an embedded slide with unreadable tiles ("" if none)."""
    if not n_failed:
        return ""
    return f"{n_failed} unreadable tile(s) {'dropped' if policy == 'drop' else 'zero-filled'}"


def manifest_row(slide_id: str, status: str, reason: str, n_tiles: int, dim: int, path: Path | str) -> dict[str, Any]:
    """One row of the feature shard manifest (``feature_shard`` schema)."""
    return {"slide_id": slide_id, "status": status, "reason": reason, "n_tiles": n_tiles, "dim": dim,
            "features_path": str(path)}


def features_identity(path: Path) -> dict[str, Any]:
    """What a feature file says about the features in it: encoder, weights' SHA-256 and width.

    An expert records it of its training features; a cohort it is applied to must match it.
    """
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as fh:
        meta = fh.metadata() or {}
        dim = int(fh.get_slice("features").get_shape()[1])
    return {"encoder": meta.get("encoder"), "weights_sha256": meta.get("weights_sha256"), "dim": dim}

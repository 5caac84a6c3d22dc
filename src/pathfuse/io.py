"""Atomic writes and self-describing files.

Every stage writes its outputs here so that a killed job never leaves a file that looks
finished: data goes to a temporary file in the destination folder, then an atomic rename.
Parquet files carry a schema name and version so that a reader fails clearly on a file from
another stage or an older pathfuse, instead of misreading it.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

#: Version of each Parquet schema pathfuse writes. Bump a version when its columns change.
SCHEMA_VERSIONS: dict[str, int] = {
    "tiles": 1,
    "tile_shard": 1,
    "tile_index": 1,
    "skipped": 1,
    "feature_shard": 1,
    "tile_feature_index": 1,
    "tile_features_manifest": 1,
    "predictions": 1,
    "fusion_manifest": 1,
    "external_manifest": 1,
    "training_curve": 1,
    "attention": 1,
    "metrics": 1,
    "table": 1,
}

_SCHEMA_KEY = b"pathfuse.schema"
_VERSION_KEY = b"pathfuse.schema_version"
_META_KEY = b"pathfuse.meta"


class SchemaError(ValueError):
    """A file is not the pathfuse file a reader expected (other schema or version)."""


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` only on success.

    The temporary file lives in the destination folder so that the final rename is atomic
    (same file system). On any exception the temporary file is removed and ``dest`` is left
    untouched.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{dest.name}.", suffix=suffix if suffix is not None else f".tmp{dest.suffix}",
        dir=dest.parent,
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp makes the file private (0600); outputs get the usual umask-based mode.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> int:
    """Delete the temporary files a killed job left in ``folder`` (those of :func:`atomic_path`).

    A SIGKILL between ``mkstemp`` and the rename skips the clean-up; the job that redoes the
    work calls this first, so no ``.<name>.*.tmp*`` file outlives a resumed run. Returns how many.
    """
    stale = [p for p in Path(folder).glob(".*.tmp*") if p.is_file()] if Path(folder).is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_parquet(
    df: pd.DataFrame,
    path: str | os.PathLike[str],
    schema: str,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``df`` atomically with its schema name, version and JSON metadata."""
    if schema not in SCHEMA_VERSIONS and not schema.startswith("table:"):
        raise KeyError(f"unknown pathfuse schema {schema!r}; known: {sorted(SCHEMA_VERSIONS)}")
    version = SCHEMA_VERSIONS.get(schema, SCHEMA_VERSIONS["table"])
    table = pa.Table.from_pandas(df, preserve_index=False)
    kv = dict(table.schema.metadata or {})
    kv[_SCHEMA_KEY] = schema.encode()
    kv[_VERSION_KEY] = str(version).encode()
    kv[_META_KEY] = json.dumps(dict(meta or {}), default=_json_default).encode()
    table = table.replace_schema_metadata(kv)
    path = Path(path)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def read_parquet_meta(path: str | os.PathLike[str], schema: str) -> dict[str, Any]:
    """Return the JSON metadata of a pathfuse Parquet file after checking its schema."""
    kv = pq.read_schema(path).metadata or {}
    _check_schema(Path(path), kv, schema)
    return json.loads(kv.get(_META_KEY, b"{}"))


def read_parquet(
    path: str | os.PathLike[str], schema: str, columns: list[str] | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read a pathfuse Parquet file, checking schema name and version; return (df, meta)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file (expected a pathfuse {schema!r} table)")
    meta = read_parquet_meta(path, schema)
    df = pq.read_table(path, columns=columns).to_pandas()
    return df, meta


def _check_schema(path: Path, kv: Mapping[bytes, bytes], schema: str) -> None:
    found = kv.get(_SCHEMA_KEY, b"").decode() or None
    if found != schema:
        raise SchemaError(
            f"{path}: expected a pathfuse {schema!r} table, found "
            f"{found!r}; delete it and re-run the stage that writes it"
        )
    want = SCHEMA_VERSIONS.get(schema, SCHEMA_VERSIONS["table"])
    version = int(kv.get(_VERSION_KEY, b"0"))
    if version != want:
        raise SchemaError(
            f"{path}: schema {schema!r} version {version}, this pathfuse reads version {want}; "
            "delete the file and re-run the stage that writes it"
        )


def write_json(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
    return path


def write_safetensors(
    tensors: Mapping[str, Any], path: str | os.PathLike[str], metadata: Mapping[str, Any]
) -> Path:
    """Write numpy arrays or torch tensors to a safetensors file atomically.

    Metadata values are stored as strings (the safetensors format only has str→str).
    """
    import numpy as np
    from safetensors.numpy import save_file

    arrays = {
        k: np.ascontiguousarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
        for k, v in tensors.items()
    }
    str_meta = {k: v if isinstance(v, str) else json.dumps(v, default=_json_default)
                for k, v in metadata.items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(arrays, str(tmp), metadata=str_meta)
    return path


def save_figure(fig: Any, stem: str | os.PathLike[str], formats: tuple[str, ...] = ("png", "svg"),
                dpi: int = 150) -> list[Path]:
    """Save a matplotlib figure as ``stem.<fmt>`` for each format, atomically (``dpi``: raster formats)."""
    out = []
    for fmt in formats:
        path = Path(f"{stem}.{fmt}")
        with atomic_path(path, suffix=f".tmp.{fmt}") as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi if fmt == "png" else None, bbox_inches="tight")
        out.append(path)
    return out


def _json_default(obj: Any) -> Any:
    """Make numpy scalars/arrays and paths JSON-serialisable."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")

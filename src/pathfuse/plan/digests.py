"""Settings digests: which settings a job's digest covers, and how the digest text is made.

Snakemake's params trigger compares a job's digest with the one its outputs were made with, so
what goes into a payload decides what reruns. :data:`NO_EFFECT` and :func:`narrow` take out, on
purpose, the settings that cannot change a job's result; anything that can change floats stays in.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pathfuse.reproducibility import file_sha256, json_digest

#: Bumped only when the digest's payload changes shape on purpose (it then reruns every job).
DIGEST_FORMAT = 1

#: Settings that cannot change any output, left out of every digest (section → keys):
#: how many processes read inputs, how many batches they keep ready, demo worker processes
#: (every demo file seeds itself), and ``experts.n_seeds`` (one seed's job does not depend on how
#: many seeds there are; evaluate and report add it when > 1). Batch size, threads, device and
#: precision stay in: they can change floating-point results.
NO_EFFECT: dict[str, tuple[str, ...]] = {
    "embedding": ("num_workers", "prefetch_factor", "allow_mixed_readers"),
    "experts": ("num_workers", "n_seeds", "features_in_memory_gib"),
    "demo": ("workers",),
}


@dataclass(frozen=True)
class JobPlan:
    """What one job reads: named lists of input files, and the digest of its settings."""

    inputs: dict[str, list[str]]
    digest: str

    @property
    def files(self) -> list[str]:
        """Every input file, in a stable order (for fingerprints inside a job)."""
        return [f for name in sorted(self.inputs) for f in self.inputs[name]]


@dataclass(frozen=True)
class MethodPlan:
    """One fusion method inside its task's fuse job: the files it reads and the digest of its settings.

    The fuse job's own digest combines its methods' digests (so Snakemake reruns the job when any
    changed); inside the job, :meth:`fingerprint` adds the content of the method's input files and
    decides, method by method, whether its predictions file is kept or refitted.
    """

    inputs: list[str]
    digest: str

    def fingerprint(self) -> str:
        """The settings digest and the SHA-256 of every input file (None where absent).

        Content, not size and mtime: a results folder copied with other timestamps keeps its methods.
        """
        hashes = [file_sha256(p) if Path(p).is_file() else None for p in self.inputs]
        return settings_digest({"settings": self.digest, "inputs": hashes})


def settings_digest(payload: Mapping[str, Any]) -> str:
    """``v<format>-<sha256 prefix>`` of a JSON-able payload (key order does not matter)."""
    return f"v{DIGEST_FORMAT}-{json_digest(payload, compact=True)[:20]}"


def narrow(data: Any, kind: str | None, task: str | None) -> Any:
    """Keep one kind's entry of per-kind blocks and one task's entry of per-task tables.

    Per-kind blocks are any ``by_kind`` or ``heads`` mapping, per-task tables ``primary_metric``;
    ``None`` keeps every entry. A tile-task setting then never reruns a slide task's job.
    """
    if not isinstance(data, dict):
        return data
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in ("by_kind", "heads") and kind is not None and isinstance(value, dict):
            out[key] = {kind: narrow(value.get(kind), kind, task)}
        elif key == "primary_metric" and task is not None and isinstance(value, dict):
            out[key] = value.get(task)
        else:
            out[key] = narrow(value, kind, task)
    return out


def folder_fingerprint(folder: Path) -> str:
    """Every file's relative path, size and mtime under ``folder``, hashed (walk order is sorted).

    A tile dataset of 100,000s of images is declared as one folder input (single files would
    slow Snakemake's planning); this fingerprint in the digest makes an added, removed or
    replaced image rerun the embedding all the same.
    """
    digest = hashlib.sha256()
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in sorted(names):
            stat = os.stat(os.path.join(root, name))
            digest.update(f"{os.path.relpath(os.path.join(root, name), folder)}|{stat.st_size}|"
                          f"{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]

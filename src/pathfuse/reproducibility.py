"""Reproducibility in one place: seeds per unit of work, digests of settings, the compute device.

* **Seeds.** Every random stream of a run comes from the run seed (``seed`` in the config) and the
  unit of work it serves (task, fold, slide, encoder …) through :func:`derive_seed`, a hash of
  their text. A job's seeds therefore do not depend on job order, on how many jobs run at once or
  on Python's hash randomisation, and a rerun of one job reproduces it alone.
* **Digests.** Every "has this changed?" check (the job plan's settings digests, an expert fold's
  resume fingerprint, a fusion method's output digest) hashes the canonical JSON text of what the
  result depends on (:func:`json_digest`), so key order and non-JSON values (paths) cannot make
  equal settings look different. Files enter a digest by content (:func:`file_sha256`), never by
  size and modification time: a results folder copied with coarser timestamps changes nothing.
* **Device.** ``device: auto | cpu | cuda`` settings resolve the same way in every stage
  (:func:`choose_device`), and asking for a GPU that is not there stops the job instead of
  silently running on the CPU (different speed and, with reduced precision, different numbers).

This module is imported at plan time (the Snakefile imports :mod:`pathfuse.plan`, which uses the
digests) and by stages without torch, so it imports no torch anywhere (:func:`choose_device` is
handed torch's GPU check by its caller).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any


def derive_seed(*parts: object, bits: int = 31, separator: str = "/") -> int:
    """A stable seed from the run seed and a unit of work, e.g. ``derive_seed(seed, task, fold)``.

    The parts' text, joined by ``separator``, is hashed with SHA-256; the seed is the low ``bits``
    bits of the digest's first bytes (little-endian). 31 bits (the default) fit every RNG that
    takes a signed 32-bit seed; numpy and torch take more.

    ``bits`` and ``separator`` exist because seeds already in use were derived with other widths
    and separators, and changing them would change the numbers they produced: demo encoders'
    random weights use ``bits=63, separator=":"``, slides' tile sampling ``bits=64``.

    Args:
        *parts: The run seed first, then what names the unit of work; each is formatted with str().
        bits: Width of the seed (1 to 256).
        separator: Text between the parts before hashing.
    """
    if not 1 <= bits <= 256:
        raise ValueError(f"seed width must be 1 to 256 bits, got {bits}")
    digest = hashlib.sha256(separator.join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[: (bits + 7) // 8], "little") & ((1 << bits) - 1)


def canonical_json(payload: Any, *, compact: bool = False) -> str:
    """The JSON text of a payload with sorted keys; values JSON cannot hold are written with str().

    Args:
        payload: Mappings, lists and scalars (paths and other objects become their text).
        compact: No spaces after ``,`` and ``:`` (the job plan's form); the default keeps
            :func:`json.dumps`'s spaces (the resume fingerprints' form). Both forms are in use:
            changing either would change every stored digest of that kind and rerun its jobs.
    """
    separators = (",", ":") if compact else None
    return json.dumps(payload, sort_keys=True, default=str, separators=separators)


def json_digest(payload: Any, *, compact: bool = False) -> str:
    """SHA-256 (hex) of :func:`canonical_json` of the payload: equal settings, equal digest."""
    return hashlib.sha256(canonical_json(payload, compact=compact).encode()).hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes, read once per process per (path, size, mtime)."""
    stat = Path(path).stat()
    return _file_sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def choose_device(wanted: str, setting: str, gpu_available: Callable[[], bool]) -> str:
    """The torch device a ``device`` setting names: ``auto`` is the GPU when there is one.

    The caller passes ``torch.cuda.is_available`` as ``gpu_available``: this module stays free of
    torch even inside functions, so the stages that never touch torch (tiling, evaluation) and
    their environments need none (tests/workflow/test_envs.py follows every import), and both answers can
    be tested on a machine without a GPU. It is only called when the answer matters (not for
    ``cpu``).

    Args:
        wanted: ``auto``, ``cpu`` or ``cuda`` (the settings' choices).
        setting: The setting's dotted name, for the error message (e.g. ``embedding.device``).
        gpu_available: Whether a GPU can be used, asked at most once.

    Raises:
        RuntimeError: ``cuda`` was asked for and there is no GPU.
    """
    if wanted == "cpu":
        return "cpu"
    has_gpu = gpu_available()
    if wanted == "cuda" and not has_gpu:
        raise RuntimeError(f"{setting} is 'cuda' but torch sees no GPU; use 'auto' or 'cpu'")
    if wanted == "auto":
        return "cuda" if has_gpu else "cpu"
    return wanted

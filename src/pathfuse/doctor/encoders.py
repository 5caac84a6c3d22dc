"""Encoder checks: weight file present, SHA-256, strict load, one forward pass.

The forward pass runs at the run's batch size on the run's device and precision, and reports the
output dim, finiteness and peak GPU memory.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from pathfuse.config import Config
from pathfuse.doctor.rows import FAIL, OK, Row
from pathfuse.encoders.inference import Embedder, select_runtime
from pathfuse.encoders.registry import encoder_spec
from pathfuse.encoders.weights import (
    WeightsError,
    file_sha256,
    load_encoder,
    missing_weights_message,
    resolve_weights_path,
)

CHECK = "encoder"


def check_encoders(cfg: Config, *, deep: bool) -> list[Row]:
    """One row per encoder of the run (deep: a second row for its load + forward pass)."""
    rows: list[Row] = []
    for name in cfg.encoder_ids:
        spec = encoder_spec(cfg, name)
        if spec.is_byo:
            rows.append(Row(CHECK, name, OK, "kind byo: features are imported (checked per cohort)"))
            continue
        path = resolve_weights_path(cfg, spec)
        if path is None:
            rows.append(Row(CHECK, name, OK, "seeded random weights (demo encoder)"))
        elif not path.is_file():
            rows.append(Row(CHECK, name, FAIL, f"weight file {path} not found",
                            missing_weights_message(spec, path)))
            continue
        else:
            size = f"{path.stat().st_size / 2**30:.2f} GiB"
            detail = f"{path} ({size}, sha256 {cached_sha256(cfg, path)[:16]}…)" if deep else f"{path} ({size})"
            rows.append(Row(CHECK, name, OK, detail))
        if deep:
            rows.append(_forward_row(cfg, name))
    return rows


def _forward_row(cfg: Config, name: str) -> Row:
    """Strict load and one batch of the configured size, as the embedding jobs will run it."""
    settings = cfg.settings.embedding
    try:
        loaded = load_encoder(cfg, name)
    except (WeightsError, RuntimeError, ValueError) as err:
        return Row(CHECK, name, FAIL, f"weights do not load strictly: {err}",
                   "use the file the registry's weights_url names, or fix arch/kwargs/remap in the registry")
    try:
        runtime = select_runtime(settings, loaded.spec.precision)
        embedder = Embedder(loaded, runtime)
        px, batch = loaded.spec.input_px, settings.batch_size
        images = torch.randint(0, 256, (batch, 3, px, px), dtype=torch.uint8)
        if runtime.is_cuda:
            torch.cuda.reset_peak_memory_stats(runtime.device)
        start = time.perf_counter()
        out = embedder(images)
        if runtime.is_cuda:
            torch.cuda.synchronize(runtime.device)
        seconds = time.perf_counter() - start
    except (RuntimeError, ValueError) as err:  # CUDA OOM is a RuntimeError; a wrong dim a ValueError
        return Row(CHECK, name, FAIL, f"forward pass failed: {err}",
                   "lower embedding.batch_size, or check embedding.device / gpu_precision")
    memory = (f", peak GPU memory {torch.cuda.max_memory_allocated(runtime.device) / 2**30:.1f} GiB"
              if runtime.is_cuda else "")
    detail = (f"loads strictly; batch {batch}×{px}² on {runtime.device} {runtime.precision}: "
              f"[{out.shape[0]}, {out.shape[1]}] in {seconds:.1f} s{memory}")
    if not torch.isfinite(out).all():
        return Row(CHECK, name, FAIL, detail + ", NON-FINITE values",
                   "try embedding.gpu_precision: fp32 (or bf16 instead of fp16); re-download the weights")
    return Row(CHECK, name, OK, detail)


def cached_sha256(cfg: Config, path: Path) -> str:
    """SHA-256 of a weight file, remembered by (path, size, mtime).

    The cache is a small JSON file under results_dir: hashing a 4 GB checkpoint takes ~10 s, so
    the doctor hashes a file once.
    """
    cache_file = Path(cfg.settings.results_dir) / ".pathfuse" / "sha256_cache.json"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    stat, key = path.stat(), str(path.resolve())
    entry = cache.get(key, {})
    if entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
        return str(entry["sha256"])
    digest = file_sha256(path)
    cache[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        cache_file.write_text(json.dumps(cache, indent=1))
    except OSError:
        pass  # a read-only results_dir only costs a re-hash next time
    return digest

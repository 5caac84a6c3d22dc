"""Batched inference: device and precision choice, the DataLoader, and an overlapped batch loop.

One code path serves CPU and GPU. On a GPU the loader pins its uint8 batches, copies them with
``non_blocking=True``, normalises and runs the model under bf16/fp16 autocast in channels-last,
and copies each batch's features back asynchronously while the next batch computes. On a CPU
the same loop runs synchronously in fp32 (bit-reproducible) or bf16 autocast, by config.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pathfuse.encoders.levels import N_LEVELS
from pathfuse.encoders.transforms import Normalize
from pathfuse.encoders.weights import LoadedEncoder
from pathfuse.reproducibility import choose_device
from pathfuse.settings import EmbeddingSettings

log = logging.getLogger(__name__)

_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Runtime:
    """Where and how an encoder runs (from the ``embedding`` config section and the registry)."""

    device: torch.device
    precision: str
    channels_last: bool
    compile: bool

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The dtype autocast computes in, None for full fp32 (no autocast context at all)."""
        return _DTYPES[self.precision]

    @property
    def is_cuda(self) -> bool:
        """Whether the encoder runs on a CUDA GPU (GPU decoding, pinned memory, peak-memory stats)."""
        return self.device.type == "cuda"


def select_runtime(settings: EmbeddingSettings, preferred_precision: str) -> Runtime:
    """Resolve ``device: auto`` and the precision for this device.

    GPU: the registry's precision unless ``gpu_precision`` overrides it. CPU: ``cpu_precision``
    (fp32 by default, so CPU runs are bitwise reproducible; bf16 roughly doubles speed on CPUs
    with AVX-512 BF16/AMX). fp16 autocast is not offered on CPU.
    """
    device = torch.device(choose_device(settings.device, "embedding.device", torch.cuda.is_available))
    if device.type == "cuda":
        precision = preferred_precision if settings.gpu_precision == "auto" else settings.gpu_precision
    else:
        precision = settings.cpu_precision
        if precision == "bf16" and not cpu_has_native_bf16():
            log.warning("embedding.cpu_precision is bf16 but this CPU has no AVX-512 BF16/AMX: bf16 matmuls "
                        "are emulated and can be far slower than fp32")
    wanted_layout = settings.channels_last
    channels_last = device.type == "cuda" if wanted_layout == "auto" else bool(wanted_layout)
    return Runtime(device=device, precision=precision, channels_last=channels_last, compile=settings.compile)


def cpu_has_native_bf16() -> bool:
    """True when the CPU advertises bf16 matrix instructions (Linux /proc/cpuinfo flags)."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "")
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def worker_count(settings: EmbeddingSettings) -> int:
    """``num_workers`` from config, or one fewer than the CPUs this job may use (at most 8)."""
    if settings.num_workers is not None:
        return settings.num_workers
    return min(8, max(1, len(os.sched_getaffinity(0)) - 1))


def make_loader(dataset: Dataset, settings: EmbeddingSettings, runtime: Runtime) -> DataLoader:
    """An in-order DataLoader of uint8 batches (pinned when the model is on a GPU)."""
    workers = worker_count(settings)
    return DataLoader(
        dataset,
        batch_size=settings.batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=runtime.is_cuda,
        prefetch_factor=settings.prefetch_factor if workers else None,
        persistent_workers=False,
    )


class Embedder:
    """An encoder on its device: uint8 image batch → float32 embeddings (still on the device)."""

    def __init__(self, loaded: LoadedEncoder, runtime: Runtime) -> None:
        self.spec = loaded.spec
        self.runtime = runtime
        model = loaded.model.to(runtime.device)
        if runtime.channels_last:
            # Module.to takes memory_format at runtime (documented); torch's overloads leave it out.
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.model = torch.compile(model) if runtime.compile else model
        self.normalize = Normalize(loaded.spec, runtime.device, runtime.channels_last)
        # With level features the model returns [embedding | low | mid] (pathfuse.encoders.levels).
        self.width = loaded.spec.dim * (N_LEVELS if loaded.model.level_blocks else 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Embed a uint8 image batch [B, 3, H, W]; raises when the output is not [B, width]."""
        dtype = self.runtime.autocast_dtype
        autocast = (torch.autocast(device_type=self.runtime.device.type, dtype=dtype) if dtype is not None
                    else contextlib.nullcontext())
        with torch.inference_mode(), autocast:
            out = self.model(self.normalize(images)).float()
        if out.ndim != 2 or out.shape[1] != self.width:
            raise ValueError(f"encoder {self.spec.name!r} produced embeddings of shape {tuple(out.shape)}; "
                             f"the registry says dim {self.spec.dim} ({self.width // self.spec.dim} level(s))")
        return out


def embed_batches(embedder: Embedder, loader: Iterable[Any]) -> Iterator[tuple[list[Any], np.ndarray]]:
    """Yield ``(extras, features)`` per batch, in order; ``extras`` are the batch's other fields.

    ``loader`` yields ``(images, *extras)`` batches: a DataLoader, or the GPU-decoding generator.

    On a GPU the features of batch *k* are copied to pinned host memory asynchronously and only
    waited for after batch *k+1* has been queued, so the device never idles on the copy.
    """
    pending: tuple[list[Any], torch.Tensor, Any] | None = None
    for images, *extras in loader:
        out = embedder(images)
        if not embedder.runtime.is_cuda:
            yield extras, out.numpy()
            continue
        host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
        host.copy_(out, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        if pending is not None:
            yield _finish(pending)
        pending = (extras, host, event)
    if pending is not None:
        yield _finish(pending)


def _finish(pending: tuple[list[Any], torch.Tensor, Any]) -> tuple[list[Any], np.ndarray]:
    extras, host, event = pending
    event.synchronize()
    return extras, host.numpy()

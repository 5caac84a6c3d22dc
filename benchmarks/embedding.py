"""Benchmark of the embedding stage → benchmarks/results/embedding.json.

Measures, on whatever machine runs it:
  * the peak of a large matrix multiply (fp32 and bf16) — the reference for model FLOP
    utilisation (MFU) measured in the same run on the same device;
  * model-only throughput of ViT-S/16 at batch 64, 224 px (the CPU target: MFU ≥ 50%), for
    fp32 and bf16 (autocast, and bf16 weights), contiguous and channels-last, all under
    ``torch.inference_mode``; FLOPs are counted by ``torch.utils.flop_counter`` on one batch;
  * end-to-end throughput of pathfuse's own path — OpenSlide read + JPEG decode + resize in
    DataLoader workers, normalisation + model in the main process — against model-only
    throughput of the same ``Embedder`` on in-memory batches (target: ratio ≥ 0.8);
  * on a GPU (when present): bf16 MFU of ViT-L/16 against a bf16 GEMM, and tiles/s for ViT-L,
    ViT-H and ViT-g.

Run: ``python benchmarks/embedding.py`` (2–4 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tifffile
import torch
from torch.utils.flop_counter import FlopCounterMode

from pathfuse.compat import import_timm
from pathfuse.config import section_settings
from pathfuse.encoders.inference import Embedder, Runtime, embed_batches, make_loader
from pathfuse.encoders.registry import EncoderSpec, build_encoder
from pathfuse.encoders.slide_tiles import ShardTiles
from pathfuse.encoders.transforms import ResizeCrop
from pathfuse.encoders.weights import LoadedEncoder
from pathfuse.settings import EmbeddingSettings

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "embedding.json"
BATCH = 64
VIT_S = EncoderSpec(name="vit_s16", dim=384, arch="vit_small_patch16_224", kwargs={}, embedding="cls",
                    input_px=224, resize_px=224, precision="bf16")


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    info = {"cpu": cpu, "cpus_usable": len(os.sched_getaffinity(0)), "torch_threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
            "timm": import_timm().__version__, "python": platform.python_version(),
            "load_average_at_start": os.getloadavg()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def timed(fn: Any, reps: int, warmup: int = 1, sync: bool = False) -> float:
    """Median seconds per call after warm-up."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if sync:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def matmul_rate(dtype: torch.dtype, device: str, n: int, reps: int = 1) -> float:
    """FLOP/s of an n×n×n matrix multiply in ``dtype`` (2n³ FLOPs), median of ``reps``."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    return 2 * n**3 / timed(lambda: a @ b, reps, warmup=1, sync=device == "cuda")


def matmul_peak(dtype: torch.dtype, device: str, reps: int, max_n: int = 4096) -> tuple[float, int]:
    """Matmul FLOP/s and the n used: n doubles from 1024 until one multiply takes ≥ 0.3 s.

    The problem is then large enough to saturate the device, and quick to re-measure next to
    each model timing (see :func:`vit_s_cpu`), which keeps MFU honest on a shared machine.
    """
    n = 1024
    while True:
        rate = matmul_rate(dtype, device, n, reps)
        if 2 * n**3 / rate >= 0.3 or n >= max_n:
            return rate, n
        n *= 2


def bf16_is_fast(device: str) -> tuple[bool, dict[str, float]]:
    """Whether bf16 matmuls run natively: CPUs without AVX-512 BF16/AMX emulate them very slowly."""
    n = 512
    rates = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        rates[name] = 2 * n**3 / timed(lambda a=a, b=b: a @ b, 1, warmup=1, sync=device == "cuda")
    return rates["bf16"] >= 0.25 * rates["fp32"], rates


def count_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Forward FLOPs (matmuls, convolutions, attention) of one batch."""
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(x)
    return int(counter.get_total_flops())


def vit_s_cpu(reps: int) -> dict[str, Any]:
    """Model-only ViT-S/16 variants on the CPU; MFU against the same-precision matmul peak."""
    torch.manual_seed(0)
    model = build_encoder(VIT_S).eval()
    x = torch.randn(BATCH, 3, 224, 224)
    flops = count_flops(model, x)
    fp32_peak, n_fp32 = matmul_peak(torch.float32, "cpu", 3)
    bf16_ok, probe = bf16_is_fast("cpu")
    peaks: dict[str, dict[str, Any]] = {"fp32": {"flops": fp32_peak, "n": n_fp32}, "bf16_probe_512": probe}
    # Module.to takes memory_format at runtime (documented); torch's overloads leave it out.
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    x_cl = x.contiguous(memory_format=torch.channels_last)
    variants: dict[str, tuple[torch.nn.Module, torch.Tensor, torch.dtype | None]] = {
        "fp32": (model, x, None), "fp32_channels_last": (model_cl, x_cl, None)}
    if bf16_ok:
        bf16_peak, n_bf16 = matmul_peak(torch.bfloat16, "cpu", 3)
        peaks["bf16"] = {"flops": bf16_peak, "n": n_bf16}
        variants |= {"bf16_autocast": (model, x, torch.bfloat16),
                     "bf16_autocast_channels_last": (model_cl, x_cl, torch.bfloat16)}
    results: dict[str, Any] = {}
    for name, (net, inp, dtype) in variants.items():
        def run(net: torch.nn.Module = net, inp: torch.Tensor = inp, dtype: torch.dtype | None = dtype) -> None:
            ctx = torch.autocast("cpu", dtype=dtype) if dtype else contextlib.nullcontext()
            with torch.inference_mode(), ctx:
                net(inp)
        results[name] = _timed_against_peak(run, reps, flops, dtype or torch.float32,
                                            peaks["bf16" if dtype else "fp32"]["n"])
        print(f"  {name}: {results[name]}", flush=True)
    if bf16_ok:
        bf16_model = copy.deepcopy(model).to(torch.bfloat16)
        xb = x.to(torch.bfloat16)

        def run_bf16() -> None:
            with torch.inference_mode():
                bf16_model(xb)
        results["bf16_weights"] = _timed_against_peak(run_bf16, reps, flops, torch.bfloat16, peaks["bf16"]["n"])
        print(f"  bf16_weights: {results['bf16_weights']}", flush=True)
    else:
        results["bf16_skipped"] = (f"bf16 matmul runs at {probe['bf16'] / probe['fp32']:.1%} of fp32 here (no "
                                   "AVX-512 BF16/AMX: emulated); a ViT-S batch would take minutes")
    best = max((k for k in results if isinstance(results[k], dict)), key=lambda k: results[k]["tiles_per_s"])
    return {"model": "vit_small_patch16_224", "batch": BATCH, "input_px": 224, "flops_per_tile": flops / BATCH,
            "matmul_peak": peaks, "variants": results, "fastest": best}


def _timed_against_peak(run: Any, reps: int, flops: int, dtype: torch.dtype, n: int) -> dict[str, float]:
    """Time ``run`` between two matmul-peak measurements; MFU against their mean."""
    before = matmul_rate(dtype, "cpu", n)
    seconds = timed(run, reps)
    peak = (before + matmul_rate(dtype, "cpu", n)) / 2
    return {"s_per_batch": seconds, "tiles_per_s": BATCH / seconds, "achieved_flops": flops / seconds,
            "matmul_flops_around": peak, "mfu": flops / seconds / peak}


def synthetic_slide(path: Path, side: int = 8192) -> Path:
    """A pyramidal JPEG TIFF with distinct textured tiles (no two reads hit the same tile)."""
    if path.exists():
        return path
    rng = np.random.default_rng(0)
    image = np.empty((side, side, 3), np.uint8)
    for row in range(0, side, 1024):
        block = rng.normal(0, 25, (1024, side, 3)) + np.array([200, 140, 190])
        image[row:row + 1024] = np.clip(block, 0, 255)
    with tifffile.TiffWriter(path) as tif:
        tif.write(image, tile=(256, 256), compression="jpeg", photometric="rgb", subfiletype=0,
                  resolution=(2e4, 2e4), resolutionunit="CENTIMETER")
        tif.write(image[::4, ::4].copy(), tile=(256, 256), compression="jpeg", photometric="rgb", subfiletype=1,
                  resolution=(5e3, 5e3), resolutionunit="CENTIMETER")
    return path


def end_to_end(precision: str, channels_last: bool, n_batches: int, workers: list[int]) -> dict[str, Any]:
    """Throughput of pathfuse's Embedder on in-memory batches vs the full DataLoader path from the slide."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    loaded = LoadedEncoder(spec=VIT_S, model=build_encoder(VIT_S).eval(), weights_sha256="", weights_source="")
    runtime = Runtime(device=device, precision=precision, channels_last=channels_last, compile=False)
    embedder = Embedder(loaded, runtime)
    images = torch.randint(0, 255, (BATCH, 3, 224, 224), dtype=torch.uint8)
    model_only = BATCH / timed(lambda: embedder(images), reps=n_batches, sync=runtime.is_cuda)
    slide = synthetic_slide(Path(tempfile.gettempdir()) / "pathfuse_bench" / "embed_8k.tiff")
    n_tiles = BATCH * n_batches
    grid = [(x, y) for y in range(0, 8192, 256) for x in range(0, 8192, 256)][:n_tiles]
    tiles = pd.DataFrame({"x": [g[0] for g in grid], "y": [g[1] for g in grid], "level": 0, "read_px": 256,
                          "tile_px": 256})
    dataset = ShardTiles(["bench"], [str(slide)], [tiles], ResizeCrop.for_encoder(VIT_S), "fail")
    start = time.perf_counter()
    for i in range(len(dataset)):
        dataset[i]
    read_only = len(dataset) / (time.perf_counter() - start)
    dataset.close()
    runs = {}
    for n_workers in workers:
        settings = section_settings(EmbeddingSettings, batch_size=BATCH, num_workers=n_workers, prefetch_factor=4)
        start = time.perf_counter()
        first: float | None = None
        for _ in embed_batches(embedder, make_loader(dataset, settings, runtime)):
            first = first or time.perf_counter()
        total = time.perf_counter() - start
        assert first is not None, "the loader gave no batch"
        steady = (n_tiles - BATCH) / (time.perf_counter() - first)
        runs[f"workers_{n_workers}"] = {"tiles_per_s": n_tiles / total, "steady_tiles_per_s": steady,
                                        "ratio_to_model_only": n_tiles / total / model_only,
                                        "steady_ratio_to_model_only": steady / model_only}
        print(f"  e2e workers={n_workers}: {runs[f'workers_{n_workers}']}", flush=True)
    return {"precision": precision, "channels_last": channels_last, "device": str(device), "n_tiles": n_tiles,
            "model_only_tiles_per_s": model_only, "read_decode_resize_tiles_per_s_one_process": read_only,
            "runs": runs, "slide": "8192² px synthetic JPEG TIFF, 256-px tiles at level 0, resized to 224"}


def gpu(reps: int) -> dict[str, Any]:
    """bf16 MFU of ViT-L/16 and tiles/s of ViT-L/H/g on the GPU."""
    timm = import_timm()
    peak, _ = matmul_peak(torch.bfloat16, "cuda", 10, max_n=16384)
    out: dict[str, Any] = {"bf16_gemm_peak_flops": peak, "models": {}}
    for arch, batch in (("vit_large_patch16_224", 256), ("vit_huge_patch14_224", 256),
                        ("vit_giant_patch14_dinov2", 128)):
        kwargs = {"img_size": 224} if "dinov2" in arch else {}
        model = timm.create_model(arch, pretrained=False, num_classes=0, **kwargs).cuda().eval()
        model = model.to(memory_format=torch.channels_last)
        x = torch.randn(batch, 3, 224, 224, device="cuda").contiguous(memory_format=torch.channels_last)
        flops = count_flops(model, x)

        def run(model: torch.nn.Module = model, x: torch.Tensor = x) -> None:
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
                model(x)
        seconds = timed(run, reps, warmup=3, sync=True)
        out["models"][arch] = {"batch": batch, "tiles_per_s": batch / seconds, "mfu": flops / seconds / peak}
        print(f"  {arch}: {out['models'][arch]}", flush=True)
        del model
        torch.cuda.empty_cache()
    return out


def summary(result: dict[str, Any]) -> str:
    """One paragraph quoting the headline numbers and ratios."""
    vit = result["cpu_vit_s16"]
    best = vit["variants"][vit["fastest"]]
    e2e = result["end_to_end"]
    runs = "; ".join(f"{k.replace('_', ' ')}: {v['tiles_per_s']:.2f} tiles/s = {v['ratio_to_model_only']:.0%} of "
                     f"model-only ({v['steady_ratio_to_model_only']:.0%} after the first batch)"
                     for k, v in e2e["runs"].items())
    text = (f"CPU ({result['machine']['cpu']}, {result['machine']['cpus_usable']} cores, "
            f"{result['machine']['cpu_capability']}): ViT-S/16 batch {BATCH} model-only, fastest variant "
            f"{vit['fastest']}: {best['tiles_per_s']:.2f} tiles/s, MFU {best['mfu']:.0%} of a same-run "
            f"{'bf16' if vit['fastest'].startswith('bf16') else 'fp32'} matmul. End to end (OpenSlide read + JPEG "
            f"decode + resize in workers, normalise + model): {runs}; pathfuse's model-only rate "
            f"{e2e['model_only_tiles_per_s']:.2f} tiles/s; one process reads+decodes+resizes "
            f"{e2e['read_decode_resize_tiles_per_s_one_process']:.0f} tiles/s. Load average during the run "
            f"{result['machine']['load_average_at_start'][0]:.1f} → {result['load_average_at_end'][0]:.1f} "
            "(a shared machine: other jobs compete for the 2 cores).")
    if "bf16_skipped" in vit["variants"]:
        text += " bf16: " + vit["variants"]["bf16_skipped"] + "."
    if result.get("gpu"):
        models = result["gpu"]["models"]
        text += " GPU: " + "; ".join(f"{k} {v['tiles_per_s']:.0f} tiles/s, MFU {v['mfu']:.0%}"
                                     for k, v in models.items())
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2, help="timed batches per variant")
    parser.add_argument("--e2e-batches", type=int, default=4, help="batches in the end-to-end run")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    result: dict[str, Any] = {"machine": machine(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    start = time.perf_counter()
    print("ViT-S/16 model-only (CPU)", flush=True)
    result["cpu_vit_s16"] = vit_s_cpu(args.reps)
    fastest = result["cpu_vit_s16"]["fastest"]
    precision = "bf16" if fastest.startswith("bf16_autocast") else "fp32"
    channels_last = fastest.endswith("channels_last")
    cpus = result["machine"]["cpus_usable"]
    workers = sorted({1, max(1, min(8, cpus - 1))})
    print(f"end to end ({precision}, channels_last={channels_last})", flush=True)
    result["end_to_end"] = end_to_end(precision, channels_last, args.e2e_batches, workers)
    if torch.cuda.is_available():
        print("GPU", flush=True)
        result["gpu"] = gpu(args.reps * 3)
    else:
        result["gpu"] = None
        result["gpu_note"] = "no GPU on this machine; the GPU section runs when torch sees one"
    result["seconds"] = time.perf_counter() - start
    result["load_average_at_end"] = os.getloadavg()
    result["note"] = summary(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

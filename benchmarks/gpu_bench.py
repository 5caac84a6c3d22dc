"""GPU figures in one short run (benchmarks/gpu.sh): GEMM peak, ViT MFU, reader end to end, ABMIL.

  * bf16 GEMM peak (the MFU reference, same device, same run);
  * model-only tiles/s and MFU of ViT-L/16 and ViT-g/14 at batch 256 (bf16 autocast,
    channels-last input, timm's SDPA attention), FLOPs counted by ``torch.utils.flop_counter``;
  * end to end from a generated 40x Aperio-style SVS read at 0.5 µm/px (512 → 256 → 224 px)
    into ViT-L/16: OpenSlide in DataLoader workers (skipped when openslide is not installed),
    the JPEG-native reader decoding in the workers (CPU, DCT 1/2), and workers reading bytes
    with nvJPEG decoding on the GPU (:mod:`pathfuse.encoders.gpu_decode`), each as a
    fraction of model-only;
  * ABMIL expert training bags/s at 2,000 tiles × 1,536 dims (bf16 autocast, AdamW);
  * the head bank (:mod:`pathfuse.heads.bank`): 30 ABMIL heads, each learning from ~70 % of
    every batch of 16 bags resident on the GPU (float16), trained one head at a time (the loop)
    and all together in stacked passes (the bank), as head-bag steps per second.

Needs only torch, torchvision, timm, tifffile, Pillow and numpy (the GPU image has no
OpenSlide, imagecodecs or pandas). ``--dry`` runs everything on the CPU with tiny sizes in
seconds (the test suite does; nvJPEG is then skipped). Run via ``bash benchmarks/gpu.sh``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from svs_writer import write_aperio_svs

from pathfuse.compat import import_timm
from pathfuse.encoders.gpu_decode import GpuJpegDecoder, collate_raw
from pathfuse.heads.abmil import ABMIL
from pathfuse.heads.stacked import stack_parameters, stacked_form
from pathfuse.slides.readers import reader_class

# Mixed values by key (sizes, model lists, tuples), read by name: typed as Any per key.
FULL: dict[str, Any] = {"gemm_n": 8192, "batch": 256, "px": 224,
                        "vits": {"vit_l16": ("vit_large_patch16_224", {}),
                                 "vit_g14": ("vit_giant_patch14_dinov2", {"img_size": 224})},
                        "steps": 10, "side": 40_960, "e2e_tiles": 6144, "bag": (2000, 1536), "abmil_steps": 200,
                        "bank": {"heads": 30, "bags": 64, "steps": 5}}
DRY: dict[str, Any] = {"gemm_n": 256, "batch": 4, "px": 32,
                       "vits": {"vit_tiny": ("vit_tiny_patch16_224", {"img_size": 32})},
                       "steps": 2, "side": 4096, "e2e_tiles": 16, "bag": (100, 64), "abmil_steps": 5,
                       "bank": {"heads": 4, "bags": 32, "steps": 2}}


def timed(fn: Callable[[], Any], steps: int, device: torch.device) -> float:
    """Seconds per call of ``fn`` after one warm-up call (synchronised on a GPU)."""
    fn()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    sync()
    return (time.perf_counter() - start) / steps


def gemm_peak(n: int, device: torch.device, steps: int) -> float:
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    return 2 * n**3 / timed(lambda: a @ b, steps, device)


def vit(arch: str, kwargs: dict[str, Any], device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    model = import_timm().create_model(arch, pretrained=False, num_classes=0, **kwargs)
    return model.eval().to(device).to(memory_format=torch.channels_last)


def forward(model: torch.nn.Module, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 NCHW batch → embeddings: normalise, channels-last, bf16 autocast, inference mode."""
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1) * 255

    def run(images: torch.Tensor) -> torch.Tensor:
        x = ((images.to(device, non_blocking=True).float() - mean) / std).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16):
            return model(x)

    return run


def model_only(model: torch.nn.Module, cfg: dict[str, Any], device: torch.device, peak: float) -> dict[str, Any]:
    run = forward(model, device)
    images = torch.randint(0, 255, (cfg["batch"], 3, cfg["px"], cfg["px"]), dtype=torch.uint8, device=device)
    with FlopCounterMode(display=False) as counter:
        run(images)
    seconds = timed(lambda: run(images), cfg["steps"], device)
    flops = counter.get_total_flops()
    return {"tiles_per_s": cfg["batch"] / seconds, "flops_per_tile": flops / cfg["batch"],
            "mfu": flops / seconds / peak}


class SlideTiles(Dataset):
    """Tile reads of one slide by one reader; raw JPEG streams instead of pixels when ``raw``."""

    def __init__(self, reader: str, path: Path, positions: list[tuple[int, int]], px: int, raw: bool) -> None:
        self.reader_name, self.path, self.positions, self.px, self.raw = reader, path, positions, px, raw
        self._reader: Any = None

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> tuple[Any, int, bool]:
        if self._reader is None:
            self._reader = reader_class(self.reader_name)(self.path)
        x, y = self.positions[i]
        if self.raw:
            return self._reader.raw_region(x, y, 0, 512, 256), i, True
        return geometry(torch.from_numpy(self._reader.read_tile(x, y, 0, 512, 256)), self.px), i, True


def geometry(tile: torch.Tensor, px: int = 224) -> torch.Tensor:
    """uint8 HWC → CHW at ``px`` (the encoders' resize; antialiased bilinear)."""
    chw = tile.permute(2, 0, 1)[None].float()
    return torch.nn.functional.interpolate(chw, size=(px, px), mode="bilinear", antialias=True)[0].round().to(
        torch.uint8)


def end_to_end(model: torch.nn.Module, cfg: dict[str, Any], device: torch.device, work: Path,
               model_rate: float) -> dict[str, Any]:
    path = work / f"aperio_40x_{cfg['side']}.svs"
    if not path.exists():
        write_aperio_svs(path, cfg["side"], mpp=0.25, tile=256)
    steps = range(0, cfg["side"] - 512 + 1, 512)
    positions = [(x, y) for y in steps for x in steps][len(steps) * len(steps) // 3:][:cfg["e2e_tiles"]]
    run = forward(model, device)
    workers = min(8, max(1, len(os.sched_getaffinity(0)) - 1))
    out: dict[str, Any] = {"tiles": len(positions), "workers": workers, "model_only_tiles_per_s": model_rate}
    modes = {"openslide": ("openslide", False), "jpeg_cpu_decode": ("jpeg", False), "jpeg_nvjpeg": ("jpeg", True)}
    for mode, (reader, raw) in modes.items():
        if reader == "openslide":
            try:
                import openslide  # noqa: F401
            except ImportError:
                out[mode] = "skipped: openslide is not installed"
                continue
        if raw and device.type != "cuda":
            out[mode] = "skipped: nvJPEG needs a CUDA device"
            continue
        dataset = SlideTiles(reader, path, positions, cfg["px"], raw)
        loader = DataLoader(dataset, batch_size=cfg["batch"], num_workers=workers, prefetch_factor=4,
                            collate_fn=collate_raw if raw else None, pin_memory=device.type == "cuda")
        decoder = GpuJpegDecoder(device, lambda hwc: geometry(hwc, cfg["px"])) if raw else None
        start = time.perf_counter()
        for payloads, _, _ in loader:
            images = decoder(payloads)[0] if decoder else payloads
            run(images)
        if device.type == "cuda":
            torch.cuda.synchronize()
        rate = len(positions) / (time.perf_counter() - start)
        out[mode] = {"tiles_per_s": rate, "fraction_of_model_only": rate / model_rate}
    return out


def abmil_training(cfg: dict[str, Any], device: torch.device) -> dict[str, Any]:
    n_tiles, dim = cfg["bag"]
    model = ABMIL(dim, 2).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4)
    bag = torch.randn(1, n_tiles, dim, device=device)
    label = torch.tensor([1], device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(bag).float(), label)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    return {"tiles_per_bag": n_tiles, "dim": dim, "bags_per_s": 1 / timed(step, cfg["abmil_steps"], device)}


def head_bank(cfg: dict[str, Any], device: torch.device, batch: int = 16,
              pass_elements: int = 2**28) -> dict[str, Any]:
    """Head-bag steps/s of H heads trained one at a time (loop) and in stacked passes (bank)."""
    n_tiles, dim = cfg["bag"]
    heads, steps = cfg["bank"]["heads"], cfg["bank"]["steps"]
    bags = torch.randn(cfg["bank"]["bags"], n_tiles, dim, device=device).half()  # resident features
    torch.manual_seed(0)
    models = [ABMIL(dim, 2).to(device) for _ in range(heads)]
    params = [dict(m.named_parameters()) for m in models]
    form = stacked_form(models[0])
    gen = torch.Generator().manual_seed(0)
    slots = [torch.randperm(batch, generator=gen)[: int(0.7 * batch)].to(device) for _ in range(heads)]
    labels = torch.zeros(len(slots[0]), dtype=torch.long, device=device)
    batches = [torch.arange(i * batch, (i + 1) * batch, device=device) % len(bags) for i in range(steps + 1)]
    loop_opts = [torch.optim.AdamW(m.parameters(), lr=1e-4, foreach=True) for m in models]
    bank_opt = torch.optim.AdamW([p for m in models for p in m.parameters()], lr=1e-4, foreach=True)
    per_pass = max(1, pass_elements // (len(slots[0]) * n_tiles * dim))
    it = iter(batches)

    def loop_step() -> None:
        x = bags[next(it)].float()
        for h, model in enumerate(models):
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(model(x[slots[h]]).float(), labels)
            loop_opts[h].zero_grad(set_to_none=True)
            loss.backward()
            loop_opts[h].step()

    def bank_step() -> None:
        x = bags[next(it)].float()
        bank_opt.zero_grad(set_to_none=True)
        for first in range(0, heads, per_pass):
            group = range(first, min(heads, first + per_pass))
            index = torch.stack([slots[h] for h in group])
            with torch.autocast(device.type, dtype=torch.bfloat16):
                out = form(stack_parameters([params[h] for h in group]), {"features": x[index]}, True).float()
            sum(torch.nn.functional.cross_entropy(o, labels) for o in out).backward()
        bank_opt.step()

    head_bags = heads * len(slots[0])
    loop_s = timed(loop_step, steps, device)
    it = iter(batches)
    bank_s = timed(bank_step, steps, device)
    return {"heads": heads, "batch": batch, "head_bags_per_step": head_bags, "tiles_per_bag": n_tiles, "dim": dim,
            "features_resident_gib": bags.numel() * 2 / 2**30, "loop_head_bags_per_s": head_bags / loop_s,
            "bank_head_bags_per_s": head_bags / bank_s, "speedup": loop_s / bank_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry", action="store_true", help="tiny sizes on the CPU, in seconds")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    cfg = DRY if args.dry else FULL
    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    work = Path(tempfile.gettempdir()) / "pathfuse_gpu_bench"
    work.mkdir(exist_ok=True)
    started = time.perf_counter()
    peak = gemm_peak(cfg["gemm_n"], device, cfg["steps"])
    result: dict[str, Any] = {
        "dry": args.dry,
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else f"cpu ({platform.machine()})",
        "torch": torch.__version__, "python": platform.python_version(), "batch": cfg["batch"],
        "bf16_gemm_peak_tflops": peak / 1e12, "models": {},
    }
    for name, (arch, kwargs) in cfg["vits"].items():
        model = vit(arch, kwargs, device)
        result["models"][name] = model_only(model, cfg, device, peak)
        if name in ("vit_l16", "vit_tiny"):
            result["end_to_end"] = end_to_end(model, cfg, device, work, result["models"][name]["tiles_per_s"])
        del model
    result["abmil_training"] = abmil_training(cfg, device)
    result["head_bank"] = head_bank(cfg, device)
    result["seconds"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

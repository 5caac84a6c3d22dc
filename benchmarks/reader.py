"""Benchmark of the slide readers → benchmarks/results/reader.json.

Tiles per second on one core, OpenSlide (``SlideReader``) against the JPEG-native reader
(``JpegTiffReader``), same tiles, same run, alternating blocks of tiles between the readers so
that the load of a shared machine treats both alike:

  (a) a 40x (0.25 µm/px) Aperio-style SVS read at 0.5 µm/px: 512-px squares at level 0 → 256 px
      (the JPEG reader decodes at DCT scale 1/2; OpenSlide decodes all and reduces);
  (b) a 20x (0.5 µm/px) Aperio-style SVS with 240-px tiles read at 0.5 µm/px: 256-px squares,
      no scaling (a read straddles up to four JPEG tiles);
  (c) end to end: pathfuse's ``ShardTiles`` in DataLoader workers feeding a ViT-S/16 on the CPU
      (random weights, fp32), against the model alone on in-memory batches.

``ratio_vs_openslide`` = JPEG-native tiles/s ÷ OpenSlide tiles/s per case (targets: ≥ 3 for
(a), ≥ 1.3 for (b)); the mean PSNR between the two readers' tiles is recorded beside it.
Slides are written once to /tmp/pathfuse_bench by benchmarks/svs_writer.py.

Run: ``python benchmarks/reader.py`` (about 1–2 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from svs_writer import write_aperio_svs

from pathfuse.compat import import_timm
from pathfuse.encoders.slide_tiles import ShardTiles
from pathfuse.encoders.transforms import ResizeCrop
from pathfuse.slides.reader import SlideReader
from pathfuse.slides.readers.base import SlideSource
from pathfuse.slides.readers.jpeg import JpegTiffReader

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "reader.json"
WORK = Path(tempfile.gettempdir()) / "pathfuse_bench"
SIDE = 40_960
BLOCK = 50  # tiles per reader before switching to the other


def slide(name: str, mpp: float, tile: int) -> Path:
    """The benchmark slide ``name`` (written on first use)."""
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / name
    return path if path.exists() else write_aperio_svs(path, SIDE, mpp=mpp, tile=tile)


def grid(path: Path, read_px: int, n: int) -> list[tuple[int, int]]:
    """``n`` tissue positions of the tiling grid (step = read_px) in row-major order, from the middle rows."""
    side = SlideReader(path).dimensions[0]
    steps = np.arange(0, side - read_px + 1, read_px)
    centre = side / 2
    cells = [(int(x), int(y)) for y in steps for x in steps
             if (x + read_px / 2 - centre) ** 2 + (y + read_px / 2 - centre) ** 2 < (0.35 * side) ** 2]
    start = len(cells) // 2 - n // 2
    return cells[start:start + n]


def read_rate(path: Path, read_px: int, out_px: int, n: int) -> dict[str, Any]:
    """tiles/s of both readers over the same ``n`` tiles, alternating blocks; PSNR of their outputs."""
    positions = grid(path, read_px, n)
    readers: dict[str, SlideSource] = {"openslide": SlideReader(path), "jpeg": JpegTiffReader(path)}
    for reader in readers.values():  # open, parse, warm the code paths
        reader.read_tile(*positions[-1], 0, read_px, out_px)
    seconds = dict.fromkeys(readers, 0.0)
    psnr = []
    for start in range(0, len(positions), BLOCK):
        block = positions[start:start + BLOCK]
        tiles = {}
        for name, reader in readers.items():
            t0 = time.perf_counter()
            tiles[name] = [reader.read_tile(x, y, 0, read_px, out_px) for x, y in block]
            seconds[name] += time.perf_counter() - t0
        for a, b in zip(tiles["jpeg"], tiles["openslide"], strict=True):
            mse = float(np.mean((a.astype(np.float64) - b) ** 2))
            psnr.append(99.0 if mse == 0 else 10 * np.log10(255**2 / mse))
    rates = {name: len(positions) / s for name, s in seconds.items()}
    return {"slide": path.name, "read_px": read_px, "out_px": out_px, "n_tiles": len(positions),
            "tiles_per_s_one_core": rates, "ratio_vs_openslide": rates["jpeg"] / rates["openslide"],
            "psnr_db_mean": float(np.mean(psnr)), "psnr_db_min": float(np.min(psnr))}


def end_to_end(path: Path, n: int, workers: int) -> dict[str, Any]:
    """ShardTiles → DataLoader(workers) → ViT-S/16 (fp32, CPU), per reader, and the model alone."""
    timm = import_timm()
    torch.manual_seed(0)
    model = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0).eval()
    positions = grid(path, 512, n)
    tiles = pd.DataFrame({"x": [p[0] for p in positions], "y": [p[1] for p in positions], "level": 0,
                          "read_px": 512, "tile_px": 256})
    geometry = ResizeCrop(resize_px=224, crop_px=224)
    batch = 32

    def run(loader: Any) -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            for images, *_ in loader:
                model((images.float() / 255.0 - 0.5) / 0.25)
        return n / (time.perf_counter() - start)

    with torch.inference_mode():
        model(torch.zeros(batch, 3, 224, 224))  # warm-up
    memory = [(torch.randint(0, 255, (batch, 3, 224, 224), dtype=torch.uint8),) for _ in range(n // batch)]
    model_only = [run(memory)]
    rates = {}
    for reader in ("openslide", "jpeg"):
        dataset = ShardTiles(["s"], [str(path)], [tiles], geometry, "fail", reader=reader)
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch, num_workers=workers,
                                             prefetch_factor=4 if workers else None)
        rates[reader] = run(loader)
    model_only.append(run(memory))  # before and after: load drift shows as a spread
    result: dict[str, Any] = {"model": "vit_small_patch16_224", "precision": "fp32", "batch": batch,
                              "workers": workers, "n_tiles": n, "model_only_tiles_per_s": float(np.mean(model_only)),
                              "model_only_before_after": model_only}
    result.update(tiles_per_s=rates, ratio_vs_openslide=rates["jpeg"] / rates["openslide"],
                  fraction_of_model_only={k: v / result["model_only_tiles_per_s"] for k, v in rates.items()})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=1500, help="tiles per reader for (a) and (b)")
    parser.add_argument("--e2e-tiles", type=int, default=192, help="tiles per reader for (c)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    result: dict[str, Any] = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cpus_usable": len(os.sched_getaffinity(0)),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "load_average_at_start": os.getloadavg()},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    svs40 = slide("aperio_40x_256.svs", 0.25, 256)
    svs20 = slide("aperio_20x_240.svs", 0.5, 240)
    result["a_40x_to_0.5mpp"] = read_rate(svs40, 512, 256, args.tiles)
    result["b_20x_to_0.5mpp"] = read_rate(svs20, 256, 256, args.tiles)
    result["c_end_to_end_vit_s"] = end_to_end(svs40, args.e2e_tiles, workers=1)
    result["load_average_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

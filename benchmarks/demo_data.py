"""Time the generation of the full default demo cohort (target: <= 25 s on 2 cores).

Why: the demo is the first job of `snakemake --cores all` on a laptop, and of every CI run;
it must stay a small fraction of README line 1's 10-minute budget. The script generates the
default demo (config/config.yaml) into a temporary folder and reports wall time, CPU time
(this process and its workers), the machine's load when it ran (other work on a shared
machine stretches wall time, not CPU time), the file count and size, and how many 256-px
tiles at 0.5 µm/px each slide offers with >= 50 % tissue (what the tiler will keep), in
benchmarks/results/demo_data.json.

    python benchmarks/demo_data.py [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import openslide

from pathfuse.config import Config
from pathfuse.demo.generate import generate_demo

REPO = Path(__file__).resolve().parents[1]
RESULT = REPO / "benchmarks" / "results" / "demo_data.json"
TILE_PX, MIN_TISSUE, SATURATION = 256, 0.5, 40


def tissue_tiles(path: Path) -> tuple[int, int]:
    """(tiles with >= 50 % tissue, all grid tiles) at level 1 (0.5 µm/px), by HSV saturation."""
    with openslide.OpenSlide(path) as slide:
        width, height = slide.level_dimensions[1]
        rgb = slide.read_region((0, 0), 1, (width, height)).convert("RGB")
    tissue = np.asarray(rgb.convert("HSV"))[..., 1] > SATURATION
    rows, cols = height // TILE_PX, width // TILE_PX
    blocks = tissue[:rows * TILE_PX, :cols * TILE_PX].reshape(rows, TILE_PX, cols, TILE_PX).mean(axis=(1, 3))
    return int((blocks >= MIN_TISSUE).sum()), rows * cols


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demo"
        cfg = Config.from_file(REPO / "config" / "config.yaml", {
            "registries.tasks": str(REPO / "src" / "pathfuse" / "resources" / "tasks.yaml"),
            "registries.encoders": str(REPO / "src" / "pathfuse" / "resources" / "encoders.yaml"),
            "demo.out_dir": str(out), "demo.workers": args.workers})
        load_before = os.getloadavg()
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        generate_demo(cfg)
        wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
        load_after = os.getloadavg()
        files = [p for p in out.rglob("*") if p.is_file()]
        slides = sorted((out / "slides").glob("*.tiff"))
        kept, grid = np.array([tissue_tiles(p) for p in slides]).T
        with openslide.OpenSlide(slides[0]) as first:
            level0 = first.dimensions
        size_mb = sum(p.stat().st_size for p in files) / 2**20
    result = {
        "benchmark": "demo_data",
        "target": "<= 25 s wall on 2 cores for the default demo",
        "workers": args.workers,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "wall_s_if_2_free_cores": round(cpu / min(2, args.workers), 2),
        "load_average_1min_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "peak_rss_mb": {"main": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                        "largest_worker": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)},
        "n_slides": len(slides),
        "n_files": len(files),
        "size_mb": round(size_mb, 1),
        "first_slide_level0_px": list(level0),
        "tiles_per_slide_ge50pct_tissue": {"mean": round(float(kept.mean()), 1), "min": int(kept.min()),
                                           "max": int(kept.max()), "grid_mean": round(float(grid.mean()), 1)},
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

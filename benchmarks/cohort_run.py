"""A lab-sized features-only run through Snakemake: wall time per stage and the longest silence in every log.

Writes a TRIDENT-style job tree of ``--slides`` synthetic bags for two encoders (a label signal in
a few feature columns, some tiles of noise), a label table and 5 published-style split files, then
runs the real workflow (``snakemake --cores``) on it to the tables. Afterwards it reads every job's
log under ``results/logs/`` and reports, per stage, the jobs' wall time (first to last log line)
and the longest gap between two consecutive log lines: each job must write a line at least once a
minute (``logging.progress_interval_s``, default 30 s).

Run: ``python benchmarks/cohort_run.py`` (1,000 slides: tens of minutes on 2 cores); writes
``benchmarks/results/cohort_run.json``. ``--slides 60`` is a quick check of the script itself.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
MODELS = {"bench_a": "uni_v1", "bench_b": "conch_v15"}
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+ ")


def write_cohort(work: Path, n_slides: int, tiles: int, dims: dict[str, int], seed: int) -> Path:
    """Bags, labels and splits of a features-only cohort; returns the run config."""
    rng = np.random.default_rng(seed)
    root = work / "trident" / "20x_256px_0px_overlap"
    slides = [f"CASE-{i:04d}" for i in range(n_slides)]
    labels = rng.integers(0, 2, n_slides)
    sizes = rng.integers(tiles // 2, tiles + 1, n_slides)  # one tiling: every encoder has the same tiles
    for encoder, model in MODELS.items():
        folder = root / f"features_{model}"
        folder.mkdir(parents=True, exist_ok=True)
        for slide, label, n in zip(slides, labels, sizes, strict=True):
            feats = rng.normal(size=(n, dims[encoder])).astype(np.float32)
            feats[: n // 4, :4] += 1.0 * label  # a quarter of the tiles carry the signal
            with h5py.File(folder / f"{slide}.h5", "w") as fh:
                fh["features"] = feats
                fh["coords"] = np.stack([np.arange(n) * 512, np.zeros(n)], axis=1).astype(np.int64)
    table = pd.DataFrame({"case_id": slides, "slide_id": slides, "label": np.where(labels, "ILC", "IDC")})
    table.to_csv(work / "labels.csv", index=False)
    (work / "splits").mkdir(exist_ok=True)
    order = rng.permutation(n_slides)
    for fold in range(5):
        test = [slides[i] for i in order[fold::5]]
        val = [slides[i] for i in order[(fold + 1) % 5::5]]
        train = sorted(set(slides) - set(test) - set(val))
        pd.DataFrame({k: pd.Series(v, dtype=object) for k, v in (("train", train), ("val", val), ("test", test))}
                     ).to_csv(work / "splits" / f"splits_{fold}.csv", index=False)
    registry = yaml.safe_load((REPO / "src" / "pathfuse" / "resources" / "encoders.yaml").read_text())
    registry.update({e: {"kind": "byo", "dim": d, "description": "benchmark bags"} for e, d in dims.items()})
    (work / "encoders.yaml").write_text(yaml.safe_dump(registry))
    demo = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config = {
        "results_dir": "results", "seed": seed, "encoders": list(MODELS), "tasks": ["brca_idc_ilc"],
        "registries": {"tasks": str(REPO / "src" / "pathfuse" / "resources" / "tasks.yaml"),
                       "encoders": str(work / "encoders.yaml")},
        "cohorts": {"bench": {"trident": {"root": str(root), "models": MODELS}}},
        "task_data": {"brca_idc_ilc": {"cohort": "bench", "labels": str(work / "labels.csv"),
                                       "splits": str(work / "splits" / "splits_{fold}.csv"), "n_folds": 5}},
        **{k: demo[k] for k in ("experts", "fusion", "report")},
    }
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def log_facts(log: Path) -> dict[str, float] | None:
    """Seconds from the first to the last line of a job's log, and the longest gap between two lines."""
    stamps = [datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp()
              for line in log.read_text(errors="replace").splitlines() if (m := STAMP.match(line))]
    if not stamps:
        return None
    gaps = np.diff(stamps) if len(stamps) > 1 else np.zeros(1)
    return {"seconds": stamps[-1] - stamps[0], "longest_silence_s": float(gaps.max()), "lines": len(stamps)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slides", type=int, default=1000)
    parser.add_argument("--tiles", type=int, default=400, help="tiles per bag at most (at least half of it)")
    parser.add_argument("--dim", type=int, default=64, help="feature width of both encoders")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="keep the run here (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "cohort_run.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        config = write_cohort(work, args.slides, args.tiles, dict.fromkeys(MODELS, args.dim), args.seed)
        written = time.perf_counter() - start
        start = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "snakemake", "--cores", str(args.cores), "-s",
                              str(REPO / "Snakefile"), "--directory", str(work), "--configfile", str(config)],
                             capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
        if run.returncode != 0:
            raise SystemExit(run.stdout[-3000:] + run.stderr[-3000:])
        stages: dict[str, dict[str, Any]] = {}
        for log in sorted((work / "results" / "logs").glob("*/*.log")):
            facts = log_facts(log)
            if facts is None:
                continue
            stage = stages.setdefault(log.parent.name, {"jobs": 0, "seconds_sum": 0.0, "seconds_max": 0.0,
                                                        "longest_silence_s": 0.0, "worst_log": ""})
            stage["jobs"] += 1
            stage["seconds_sum"] += facts["seconds"]
            stage["seconds_max"] = max(stage["seconds_max"], facts["seconds"])
            if facts["longest_silence_s"] >= stage["longest_silence_s"]:
                stage["longest_silence_s"], stage["worst_log"] = facts["longest_silence_s"], log.name
    result = {
        "what": "features-only TRIDENT cohort through snakemake to the tables (brca_idc_ilc, 2 encoders, 5 folds)",
        "machine": {"cpu": platform.processor() or platform.machine(), "cores_used": args.cores},
        "cohort": {"slides": args.slides, "tiles_per_bag": f"{args.tiles // 2}..{args.tiles}", "dim": args.dim},
        "settings": "the demo config's experts/fusion/report sections (config/config.yaml)",
        "seconds_writing_bags": round(written, 1), "wall_seconds": round(wall, 1),
        "stages": {k: {**v, "seconds_sum": round(v["seconds_sum"], 1), "seconds_max": round(v["seconds_max"], 1)}
                   for k, v in stages.items()},
        "every_log_wrote_a_line_each_minute": all(v["longest_silence_s"] <= 60 for v in stages.values()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

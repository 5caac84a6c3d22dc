r"""Plan the full 22-task benchmark at real cohort sizes and time `snakemake -n`.

Why: a workflow that plans fine on the demo can still choke a scheduler (or Snakemake itself)
at real scale — PANDA alone has ~10,600 slides. This script writes slide manifests (PANDA:
empty slide files for its glob), label tables and split CSVs with the published cohort sizes,
and the tile-dataset folders, into a temporary folder; points config/lp22.yaml at them through
a second config file; and runs the dry-run a user would run on a cluster:

    snakemake -n --workflow-profile workflow/profiles/slurm --directory <tmp>/run \
        --configfile config/lp22.yaml <tmp>/overlay.yaml

It reports the planning time, the jobs per rule, and the SLURM submissions after the profile's
job grouping (targets: <= 60 s and <= 5,000 jobs), plus what docs/scaling.md quotes: per FM the
FLOPs per tile (counted on the real architecture, built on the meta device), GPU-hours
(computed from those FLOPs and an assumed share of the GPU's peak), CPU core-hours (scaled from
the measured CPU rate) and float16 feature storage. All in benchmarks/results/scale_plan.json.

    python benchmarks/scale_plan.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
RESULT = REPO / "benchmarks" / "results" / "scale_plan.json"
PROFILE = REPO / "workflow" / "profiles" / "slurm"

# Diagnostic slides per cohort (approximate published counts; the brief's figures where the
# literature varies). tcga_brca_lusc is the merged BRCA + LUSC mutation cohort.
COHORT_SLIDES = {
    "panda": 10_616,
    "tcga_brca": 1_022,
    "tcga_brca_lusc": 1_500,
    "bracs": 547,
    "crc": 700,
    "tcga_coadread": 566,
    "tcga_blca": 457,
    "tcga_kirc": 519,
    "tcga_lusc": 478,
    "tcga_gbmlgg": 1_015,
}
# Images per tile dataset and split (approximate published sizes, at most ~1e5 per split). They
# set the embedding cost, not the plan: one embed_tiles job per encoder (all its datasets)
# whatever the size. pcam ships as HDF5 arrays.
TILE_DATASETS = {
    "ccrcc_tissue": {"all": 50_000},
    "crc100k": {"train": 100_000, "test": 7_180},
    "crc_msi": {"train": 93_408, "test": 98_904},
    "tcga_tils": {"train": 50_000, "val": 10_000, "test": 20_000},
    "esca_tissue": {"train": 60_000, "test": 40_000},
}
PCAM_SPLITS = ("train", "valid", "test")
PCAM_IMAGES = 327_680  # 262,144 train + 32,768 valid + 32,768 test (published)
# Tissue tiles per slide at 20x (0.5 um/px), 256 px: ASSUMED typical means, not measured here
# (TCGA diagnostic resections ~1e4, BRACS resections larger, PANDA biopsies ~1.5e3). After
# tiling, the real counts are the n_tiles column of results/tiles/<cohort>/_index.parquet.
TILES_PER_SLIDE = {"panda": 1_500, "bracs": 15_000}
TILES_PER_SLIDE_DEFAULT = 12_000
# GPU throughput is COMPUTED: FLOPs per tile (counted on the real architectures, meta device)
# divided by an assumed 40 % of the published dense bf16 peak; data loading caps small models.
GPU_PEAK_BF16_TFLOPS = {"A100": 312, "H100": 989}  # NVIDIA datasheets (SXM, dense)
GPU_EFFICIENCY = 0.40
LOADER_TILES_PER_S = 3_000  # 8 loader workers x ~400-700 JPEG tile reads/s each (ENVIRONMENT.md)
# CPU throughput MEASURED on this kind of machine (ENVIRONMENT.md): ViT-L/16, bf16, 2 cores.
CPU_VITL_TILES_PER_S, VITL_GFLOPS = 2.4, 123.1
SHARE_OF_CASES_WITH_TWO_SLIDES = 0.1  # TCGA: some patients have several diagnostic slides


def slide_table(cohort: str, n_slides: int, rng: np.random.Generator) -> pd.DataFrame:
    """A cohort's slide_id and case_id columns.

    TCGA-like ids, with a share of cases that have a second slide (PANDA: one biopsy slide per case).
    """
    share = 0.0 if cohort == "panda" else SHARE_OF_CASES_WITH_TWO_SLIDES
    n_cases = n_slides - int(n_slides * share / (1 + share))
    cases = [f"{cohort.upper()}-{i:05d}" for i in range(n_cases)]
    second = sorted(rng.choice(cases, n_slides - n_cases, replace=False))
    rows = [(f"{case}-DX1", case) for case in cases] + [(f"{case}-DX2", case) for case in second]
    return pd.DataFrame(rows, columns=["slide_id", "case_id"]).sort_values("slide_id", ignore_index=True)


def write_split_csvs(cases: pd.Series, n_folds: int, pattern: str, rng: np.random.Generator) -> None:
    """Published-style split files: ragged train,val,test columns of case ids, one per fold."""
    unique = rng.permutation(cases.unique())
    chunks = np.array_split(unique, max(n_folds, 5))
    for fold in range(n_folds):
        test, val = chunks[fold % len(chunks)], chunks[(fold + 1) % len(chunks)]
        train = np.setdiff1d(unique, np.concatenate([test, val]))
        columns = {"train": pd.Series(train), "val": pd.Series(val), "test": pd.Series(test)}
        path = Path(pattern.format(fold=fold))
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(columns).to_csv(path, index=False)


def label_table(task: dict, slides: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """A label table in the task's published format (TASKS.md), random but well-formed labels."""
    table = slides.copy()
    n = len(table)
    if task["kind"] == "survival":
        table[task["time_column"]] = rng.gamma(2.0, 20.0, n).round(2)
        table[task["censorship_column"]] = rng.integers(0, 2, n)
    else:
        table[task["label_column"]] = rng.choice(task["classes"], n)
    return table


def make_inputs(root: Path, tasks: dict[str, dict], lp22: dict) -> dict:
    """Write the inputs under ``root``; return the config overlay that points lp22.yaml at them."""
    rng = np.random.default_rng(0)
    overlay: dict = {
        "results_dir": str(root / "results"),
        "registries": {"tasks": str(REPO / "src" / "pathfuse" / "resources" / "tasks.yaml"),
                       "encoders": str(REPO / "src" / "pathfuse" / "resources" / "encoders.yaml")},
        "cohorts": {}, "tile_datasets": {}, "task_data": {},
    }
    slides = {}
    for cohort, n in COHORT_SLIDES.items():
        slides[cohort] = slide_table(cohort, n, rng)
        folder = root / "cohorts" / cohort
        folder.mkdir(parents=True, exist_ok=True)
        if "slides" in lp22["cohorts"][cohort]:  # a glob in lp22.yaml: empty slide files to match
            for slide_id in slides[cohort]["slide_id"]:
                (folder / f"{slide_id}.tiff").touch()
            overlay["cohorts"][cohort] = {"slides": str(folder / "*.tiff")}
            continue
        table = slides[cohort][["slide_id"]].copy()
        table["path"] = str(folder) + "/" + table["slide_id"] + ".svs"
        for path in table["path"]:  # the start-up check refuses manifest rows naming missing files
            Path(path).touch()
        table.to_csv(folder / "manifest.csv", index=False)
        overlay["cohorts"][cohort] = {"manifest": str(folder / "manifest.csv")}

    mutation_tables: dict[str, pd.DataFrame] = {}
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for task_id in _lp22_task_ids(tasks):
        task = tasks[task_id]
        entry = lp22["task_data"].get(task_id, {})
        if task["kind"] == "tile_classification":
            continue
        cohort = entry.get("cohort", task["cohort"])
        labels = root / "labels" / Path(entry["labels"]).name
        splits = str(root / "splits" / Path(entry["splits"]).parent.name / "splits_{fold}.csv")
        if task["kind"] == "mutation":  # one table, one column per gene
            base = mutation_tables.setdefault(str(labels), slides[cohort].copy())
            base[task["label_column"]] = rng.integers(0, 2, len(base))
        else:
            label_table(task, slides[cohort], rng).to_csv(labels, index=False)
        n_folds = int(entry.get("n_folds", task["split"].get("n_folds", 5)))
        if not Path(splits.format(fold=0)).exists():
            write_split_csvs(slides[cohort]["case_id"], n_folds, splits, rng)
        overlay["task_data"][task_id] = {"labels": str(labels), "splits": splits}
    for path, table in mutation_tables.items():
        table.to_csv(path, index=False)

    for dataset, sizes in TILE_DATASETS.items():
        # The tree of each dataset with one image per class and split: the plan has one
        # embed_tiles job per encoder and never lists the images, so their number
        # does not change it (writing ~5e5 empty files here took minutes for nothing).
        folder = root / "tiles" / dataset
        classes = next(t["classes"] for t in tasks.values() if t.get("dataset") == dataset)
        for split in sizes:
            for cls in classes:
                target = folder / split / str(cls) if split != "all" else folder / str(cls)
                target.mkdir(parents=True, exist_ok=True)
                (target / f"{dataset}_000000.png").touch()
        overlay["tile_datasets"][dataset] = {"path": str(folder), "format": "image_folder"}
    pcam = root / "tiles" / "pcam"
    pcam.mkdir(parents=True, exist_ok=True)
    for split in PCAM_SPLITS:
        for part in ("x", "y"):
            (pcam / f"camelyonpatch_level_2_split_{split}_{part}.h5").touch()
    overlay["tile_datasets"]["pcam"] = {"path": str(pcam), "format": "pcam_hdf5"}
    # Weight files are declared inputs of the embedding jobs: empty stand-ins let the plan resolve.
    registry = yaml.safe_load((REPO / "src" / "pathfuse" / "resources" / "encoders.yaml").read_text())
    weights = root / "weights"
    for name in lp22["encoders"]:
        if registry[name].get("weights"):
            (weights / registry[name]["weights"]).parent.mkdir(parents=True, exist_ok=True)
            (weights / registry[name]["weights"]).touch()
    overlay["embedding"] = {"weights_dir": str(weights)}
    return overlay


def _lp22_task_ids(tasks: dict[str, dict]) -> list[str]:
    return [t for t, spec in tasks.items() if spec.get("lp22")]


def dry_run(root: Path, overlay: Path) -> tuple[float, dict[str, int], str]:
    """Run the dry-run; return (seconds, jobs per rule, tail of the output)."""
    command = [
        sys.executable, "-m", "snakemake", "-n", "--quiet", "rules",
        "--workflow-profile", str(PROFILE), "--directory", str(root / "run"),
        "--snakefile", str(REPO / "Snakefile"),
        "--configfile", str(REPO / "config" / "lp22.yaml"), str(overlay),
    ]
    start = time.perf_counter()
    proc = subprocess.run(command, check=False, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise SystemExit(f"snakemake -n failed ({proc.returncode}):\n{output[-4000:]}")
    table = output.rsplit("Job stats:", 1)[-1]
    counts = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.MULTILINE)}
    return seconds, counts, output[-2000:]


def slurm_submissions(counts: dict[str, int]) -> dict[str, int]:
    """The number of sbatch calls after the profile's grouping (components of one group share a job).

    Every grouped rule here forms singleton components (expert) or one component per task
    (fuse -> evaluate), so a group's jobs = ceil(components / group-components).
    """
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    groups, per_job = profile.get("groups", {}), profile.get("group-components", {})
    components: dict[str, int] = {}
    for rule, group in groups.items():
        # fuse and evaluate of one task are connected: count the tasks once.
        components[group] = max(components.get(group, 0), counts.get(rule, 0))
    submissions = {rule: n for rule, n in counts.items() if rule not in groups and rule not in ("all", "total")}
    for group, n in components.items():
        submissions[f"group:{group}"] = math.ceil(n / int(per_job.get(group, 1)))
    submissions["total"] = sum(submissions.values())
    return submissions


def embedding_workload() -> dict[str, int]:
    """Images each FM embeds: tissue tiles of every cohort + every tile-dataset image."""
    slide_tiles = sum(n * TILES_PER_SLIDE.get(c, TILES_PER_SLIDE_DEFAULT) for c, n in COHORT_SLIDES.items())
    dataset_images = sum(sum(s.values()) for s in TILE_DATASETS.values()) + PCAM_IMAGES
    return {"slides": sum(COHORT_SLIDES.values()), "slide_tiles": slide_tiles,
            "tile_dataset_images": dataset_images, "total_images": slide_tiles + dataset_images}


def fm_costs(encoders: list[str], n_images: int, n_slide_tiles: int) -> dict[str, dict[str, float]]:
    """What each foundation model costs at scale.

    Per FM: parameters, GFLOPs per tile (counted), GPU-hours (computed), CPU core-hours (scaled
    from the measured ViT-L rate) and float16 feature storage.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from pathfuse.encoders.registry import EncoderSpec, build_encoder

    registry = yaml.safe_load((REPO / "src" / "pathfuse" / "resources" / "encoders.yaml").read_text())
    costs = {}
    for name in encoders:
        spec = EncoderSpec.from_entry(name, registry[name])
        with torch.device("meta"):
            model = build_encoder(spec).eval()
            counter = FlopCounterMode(display=False)
            with counter, torch.no_grad():
                model(torch.zeros(1, 3, spec.input_px, spec.input_px))
        gflops = counter.get_total_flops() / 1e9
        row = {"params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
               "input_px": spec.input_px, "dim": spec.dim, "gflops_per_tile": round(gflops, 1)}
        for gpu, peak in GPU_PEAK_BF16_TFLOPS.items():
            rate = min(peak * GPU_EFFICIENCY * 1e3 / gflops, LOADER_TILES_PER_S)
            row[f"{gpu}_tiles_per_s"] = round(rate)
            row[f"{gpu}_gpu_hours"] = round(n_images / rate / 3600, 1)
        cpu_rate = CPU_VITL_TILES_PER_S * VITL_GFLOPS / gflops  # tiles/s on 2 cores
        row["cpu_core_hours_this_machine"] = round(n_images / cpu_rate / 3600 * 2)
        # features float16 [n, dim] + coords int64 [n, 2] per slide tile; features only for datasets
        row["feature_storage_gb"] = round((n_images * spec.dim * 2 + n_slide_tiles * 16) / 1e9, 1)
        costs[name] = row
    return costs


def machine() -> dict[str, object]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    snakemake_version = subprocess.run([sys.executable, "-m", "snakemake", "--version"],
                                       check=False, capture_output=True, text=True).stdout.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "load_average_1_5_15": os.getloadavg(),
            "python": platform.python_version(),
            "snakemake": snakemake_version, "platform": platform.platform()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, help="write the inputs here and keep them (default: a temp dir)")
    args = parser.parse_args()
    tasks = yaml.safe_load((REPO / "src" / "pathfuse" / "resources" / "tasks.yaml").read_text())
    lp22 = yaml.safe_load((REPO / "config" / "lp22.yaml").read_text())
    with tempfile.TemporaryDirectory(prefix="pathfuse-scale-") as tmp:
        root = (args.keep or Path(tmp)).resolve()
        start = time.perf_counter()
        overlay = make_inputs(root, tasks, lp22)
        overlay_path = root / "overlay.yaml"
        overlay_path.write_text(yaml.safe_dump(overlay, sort_keys=False))
        generate_seconds = time.perf_counter() - start
        seconds, counts, tail = dry_run(root, overlay_path)
    submissions = slurm_submissions(counts)
    workload = embedding_workload()
    costs = fm_costs(lp22["encoders"], workload["total_images"], workload["slide_tiles"])
    result = {
        "benchmark": "scale_plan",
        "what": "snakemake -n of config/lp22.yaml (22 tasks x all its encoders) at real cohort sizes, "
                "through workflow/profiles/slurm",
        "cohort_slides": COHORT_SLIDES,
        "tile_dataset_images": {**{d: sum(s.values()) for d, s in TILE_DATASETS.items()}, "pcam": PCAM_IMAGES},
        "encoders": lp22["encoders"],
        "shard_size": lp22.get("tiling", {}).get("shard_size"),
        "dry_run_seconds": round(seconds, 1),
        "input_generation_seconds": round(generate_seconds, 1),
        "jobs_by_rule": counts,
        "jobs_total": counts.get("total"),
        "slurm_submissions": submissions,
        "targets": {"dry_run_seconds_max": 60, "jobs_max": 5000},
        "meets_targets": seconds <= 60 and counts.get("total", 10**9) <= 5000,
        "embedding_workload": workload,
        "assumptions": {
            "tiles_per_slide": {**TILES_PER_SLIDE, "other cohorts": TILES_PER_SLIDE_DEFAULT},
            "gpu_peak_bf16_tflops": GPU_PEAK_BF16_TFLOPS, "gpu_efficiency": GPU_EFFICIENCY,
            "loader_tiles_per_s": LOADER_TILES_PER_S,
            "cpu_measured": f"ViT-L/16 bf16 {CPU_VITL_TILES_PER_S} tiles/s on 2 cores (ENVIRONMENT.md)",
        },
        "fm_costs": costs,
        "fm_totals": {
            "A100_gpu_hours": round(sum(c["A100_gpu_hours"] for c in costs.values())),
            "H100_gpu_hours": round(sum(c["H100_gpu_hours"] for c in costs.values())),
            "feature_storage_tb": round(sum(c["feature_storage_gb"] for c in costs.values()) / 1e3, 2),
        },
        "machine": machine(),
        "snakemake_output_tail": tail.splitlines()[-3:],
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("dry_run_seconds", "jobs_total", "slurm_submissions", "meets_targets",
                                             "fm_totals")}, indent=2))


if __name__ == "__main__":
    main()

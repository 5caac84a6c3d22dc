"""The reduced demo that the end-to-end tests run (workflow and SLURM tests share it)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: The reduced demo every end-to-end test runs: a slide classification, a survival and a tile
#: task (mutation tasks share the slide-classification code path), two encoders.
REDUCED_TASKS = ["brca_idc_ilc", "surv_brca", "crc100k"]
REDUCED_ENCODERS = ["demo_vit_a", "demo_vit_b"]


def write_reduced_config(workdir: Path, **overrides: object) -> Path:
    """Write a small demo config into ``workdir`` (results go to ``workdir/results``).

    Registries are given as absolute paths so Snakemake can run with ``--directory workdir``.
    """
    import yaml

    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    raw["registries"] = {"tasks": str(REPO / "config" / "tasks.yaml"),
                         "encoders": str(REPO / "config" / "encoders.yaml")}
    raw["tasks"] = list(REDUCED_TASKS)
    raw["encoders"] = list(REDUCED_ENCODERS)
    raw["task_data"] = {t: v for t, v in raw["task_data"].items() if t in REDUCED_TASKS}
    raw["tile_datasets"] = {d: v for d, v in raw["tile_datasets"].items()
                            if any(raw["task_data"][t].get("dataset") == d for t in REDUCED_TASKS)}
    raw.setdefault("demo", {}).update(REDUCED_DEMO)
    for key, value in overrides.items():
        raw[key] = value
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


#: Demo size for the reduced runs (keys of workflow/schemas/sections/demo.schema.yaml).
REDUCED_DEMO: dict[str, object] = {
    "n_cases": 12, "slide_width_px": 2048, "slide_height_px": 1024, "tile_images_per_class": 4,
}


def snakemake_cmd(workdir: Path, config: Path, *extra: str) -> list[str]:
    """The Snakemake command line of an end-to-end test (targets, if any, go in ``extra``)."""
    import sys

    return [sys.executable, "-m", "snakemake", *extra, "-s", str(REPO / "Snakefile"),
            "--directory", str(workdir), "--configfile", str(config)]

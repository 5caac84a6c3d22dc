"""The demo as a positive control: which latent factor drives which label, and who sees it.

The demo must show what fusion does on real data, where foundation models are complementary:
each sees part of what predicts a label, so combining their logits beats the best of them.
Random-weight encoders see nothing in particular, so the complementarity is built in on both
sides and documented here (and in ``docs/demo.md``, and in the ``README.md`` the generator
writes next to the demo's files):

* the image — every case has four latent factors (:data:`LATENT`) rendered as different
  image properties by :func:`pathfuse.demo.tissue.render_tissue`: stain ``hue`` moves
  red against blue absorbance and leaves the green channel alone; ``density`` fills the
  nuclear lattice and darkens nuclei (darker green and red); ``nucleus_scale`` changes the
  nuclear grain at constant nuclear area; ``tumour`` is the fraction of tissue in regions of
  large dark nuclei (a multiple-instance signal);
* the encoders (``demo_vit_*`` in ``resources/encoders.yaml``) — ``demo_vit_a`` divides red
  and blue by 1000 in its normalisation, so it sees the green channel only: density and
  tumour, and it is blind to hue; ``demo_vit_b`` sees the tile at 32 px (4 µm/px): colour
  and low frequencies, hue first; ``demo_vit_c`` sees 64 px in colour and mixes both;
* the labels — every label is a noisy mix in which hue and density carry comparable weight
  (:data:`DESIGNS`, one entry per task), so the colour-blind expert and the colour experts
  each hold about half of the signal. Tile classes sit on a Latin square of (hue, density)
  levels (:func:`pathfuse.demo.tiles._class_prototype`).

Which tasks get demo data comes from the task registry (:func:`pathfuse.demo.generate.demo_tasks`);
this module says how: a task :data:`DESIGNS` does not list gets :func:`default_design`.

Measured linear-probe R² per 256-px tile at the time of writing (240 tiles, ridge, 4-fold):
demo_vit_a hue −0.01, density 0.30; demo_vit_b hue 0.87, density 0.17, nucleus grain 0.39;
demo_vit_c hue 0.82, density 0.21.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pathfuse.config import TaskSpec
from pathfuse.demo.tiles import TileDatasetPlan

LATENT = ("hue", "nucleus_scale", "density", "tumour")

#: Weights of the latent factors (hue, nucleus_scale, density, tumour) behind a label.
Weights = tuple[float, float, float, float]


@dataclass(frozen=True)
class RankedClasses:
    """A label table of its own (stem = task id): classes cut by the rank of the task's score."""

    weights: Weights
    proportions: tuple[float, ...] | None = None  # class proportions, lowest score first; None = equal


@dataclass(frozen=True)
class CoarserClasses:
    """A label table of its own whose classes group another task's (``source``) classes.

    ``mapping[i]`` is the class index of the source's class ``i`` (BRACS 7 → 3).
    """

    source: str
    mapping: tuple[int, ...]


@dataclass(frozen=True)
class MutationColumn:
    """One 0/1 column (the task's label column) of a label table shared by the tasks on one cohort (``table``).

    The split CSVs are shared too and stratify by the table's first column.
    """

    weights: Weights
    prevalence: float
    table: str = "mutation"


@dataclass(frozen=True)
class SurvivalTimes:
    """A label table of its own: exponential event times whose log-hazard is the task's score.

    ``val_equals_test`` reproduces a published defect (a val column identical to test) that
    the experts stage must handle.
    """

    weights: Weights
    val_equals_test: bool = False


Design = RankedClasses | CoarserClasses | MutationColumn | SurvivalTimes | TileDatasetPlan

#: The demo design of every benchmark task, in the order of the demo's manifest (demo.done).
#: Tasks not listed get :func:`default_design`; every label mixes hue and density with
#: comparable weight, so that no single demo encoder sees the whole signal.
DESIGNS: dict[str, Design] = {
    "brca_idc_ilc": RankedClasses((0.8, 0.2, -1.0, 0.0), (0.6, 0.4)),
    "crc_tumor_normal": RankedClasses((-0.7, 0.0, 0.8, 0.5)),
    "bracs_7": RankedClasses((0.8, 0.3, 1.0, 0.3)),
    "panda_isup": RankedClasses((-0.7, 0.3, 1.0, 0.3)),
    # N PB UDH → benign; FEA ADH → atypical; DCIS IC → malignant
    "bracs_3": CoarserClasses("bracs_7", (0, 0, 0, 1, 1, 2, 2)),
    "mut_tp53": MutationColumn((1.0, 0.3, 0.9, 0.0), 0.40),
    "mut_pik3ca": MutationColumn((-0.8, 0.0, 1.0, 0.2), 0.35),
    "mut_pten": MutationColumn((0.8, -0.3, -1.0, 0.0), 0.30),
    "mut_arid1a": MutationColumn((0.9, 0.4, 0.8, 0.0), 0.30),
    "mut_nf1": MutationColumn((-0.9, 0.0, -0.8, 0.3), 0.35),
    "surv_brca": SurvivalTimes((0.8, 0.2, 0.9, 0.2)),
    "surv_crc": SurvivalTimes((-0.8, 0.0, 0.8, 0.4)),
    "surv_blca": SurvivalTimes((0.9, 0.0, -0.8, 0.2)),
    "surv_kirc": SurvivalTimes((-0.8, 0.3, -0.9, 0.0)),
    "surv_lusc": SurvivalTimes((0.8, 0.0, 0.9, 0.3)),
    "surv_gbmlgg": SurvivalTimes((-0.9, 0.2, 0.8, 0.2), val_equals_test=True),
    # Layouts follow the real datasets (pathfuse.demo.tiles); a test centre of its own: stain shift.
    "ccrcc_tissue": TileDatasetPlan("ccrcc_tissue", ("",), "png"),
    "crc100k": TileDatasetPlan("crc100k", ("train", "test"), "png", shifted_test=True),
    "crc_msi": TileDatasetPlan("crc_msi", ("train", "test"), "jpg"),
    "tcga_tils": TileDatasetPlan("tcga_tils", ("train", "val", "test"), "png"),
    "esca_tissue": TileDatasetPlan("esca_tissue", ("train", "test"), "png", shifted_test=True),
    "pcam": TileDatasetPlan("pcam", ("train", "valid", "test"), "h5", image_px=96),
}
#: The label mix of a task the design does not list: hue and density with equal weight.
DEFAULT_WEIGHTS: Weights = (0.8, 0.2, 0.8, 0.2)


def default_design(task: TaskSpec) -> Design | None:
    """The design of a task :data:`DESIGNS` does not list, from what its kind says.

    A tile task gets a PNG dataset with train and test folders; a time-to-event task survival
    times; a slide task with classes a ranked label table; anything else no demo data (None).
    """
    kind = task.kind_strategy
    if not kind.slide:
        return TileDatasetPlan(task.id, ("train", "test"), "png")
    if kind.time_to_event:
        return SurvivalTimes(DEFAULT_WEIGHTS)
    return RankedClasses(DEFAULT_WEIGHTS) if kind.has_classes else None


def demo_designs(tasks: Iterable[TaskSpec]) -> dict[str, Design]:
    """The design of each task the demo makes data for; tasks without one are left out.

    Those of :data:`DESIGNS` come first, in its order (the manifest's), then the others in the order given.
    """
    by_id = {task.id: task for task in tasks}
    ordered = [t for t in DESIGNS if t in by_id] + [t for t in by_id if t not in DESIGNS]
    designs = {t: DESIGNS.get(t) or default_design(by_id[t]) for t in ordered}
    for t, design in designs.items():  # coarser classes need their source's labels
        if isinstance(design, CoarserClasses) and not isinstance(designs.get(design.source), RankedClasses):
            designs[t] = default_design(by_id[t])
    return {t: design for t, design in designs.items() if design is not None}


def label_table(task_id: str, design: Design) -> str | None:
    """The stem of the label table (and split folder) a task's labels go to; None for tile tasks."""
    if isinstance(design, TileDatasetPlan):
        return None
    return design.table if isinstance(design, MutationColumn) else task_id


#: Which image property each factor shows as, and which demo encoder sees it.
FACTORS = {
    "hue": ("stain colour: red vs blue absorbance, green unchanged", "demo_vit_b, demo_vit_c (not demo_vit_a)"),
    "density": ("nuclear density and darkness: how dark the green and red are", "demo_vit_a best; b, c weakly"),
    "nucleus_scale": ("nuclear grain at constant nuclear area (texture only)", "weakly, mostly demo_vit_b"),
    "tumour": ("fraction of tissue in regions of large dark nuclei (some tiles only)", "weakly, all"),
}
ENCODERS = {
    "demo_vit_a": "green channel only (red and blue divided by 1000 in its normalisation), 64 px: colour-blind",
    "demo_vit_b": "32-px view of the 256-px tile (4 µm/px), colour: low frequencies and stain hue",
    "demo_vit_c": "64 px, colour, CLS + mean of patch tokens: a mix of both",
}


_NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def _weights_row(name: str, weights: tuple[float, ...]) -> str:
    return f"| {name} | " + " | ".join(f"{w:+.1f}" for w in weights) + " |"


def _label_rows(designs: Mapping[str, Design], tasks: Mapping[str, TaskSpec]) -> list[str]:
    """One row of factor weights per label: a task's, or a shared table's column (mutations)."""
    rows = []
    for task_id, design in designs.items():
        if isinstance(design, RankedClasses | SurvivalTimes):
            rows.append(_weights_row(task_id, design.weights))
        elif isinstance(design, MutationColumn):
            rows.append(_weights_row(str(tasks[task_id].label_column), design.weights))
    return rows


def readme(n_cases: int, n_slides: int, label_noise: float, designs: Mapping[str, Design],
           tasks: Mapping[str, TaskSpec]) -> str:
    """The ``README.md`` written next to the demo's files: what it is and why fusion should win."""
    n_tile = sum(isinstance(d, TileDatasetPlan) for d in designs.values())
    tile_datasets = _NUMBER_WORDS[n_tile] if n_tile < len(_NUMBER_WORDS) else str(n_tile)
    lines = [
        "# The pathfuse demo cohort (synthetic)",
        "",
        f"{n_cases} synthetic patients ({n_slides} slides) and {tile_datasets} synthetic tile datasets, written by",
        "`pathfuse demo-data` (`pathfuse.demo`). Nothing here is real tissue. The cohort is a",
        "**positive control** for fusion: the demo encoders are complementary by construction, so a",
        "logit-level fuser (LogitProd, stacking, mean of logits) should beat the validation-selected",
        "best single expert on most tasks. Design and measured results: `docs/demo.md` in the repository.",
        "",
        "## Latent factors and who sees them",
        "",
        "| factor | shows in the image as | seen by |",
        "|---|---|---|",
        *(f"| {k} | {v[0]} | {v[1]} |" for k, v in FACTORS.items()),
        "",
        "| encoder | what it sees |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in ENCODERS.items()),
        "",
        "## Labels",
        "",
        f"Each label is a unit-norm mix of the factors plus Gaussian noise (sd {label_noise}, signal sd 1),",
        "cut into classes by rank (classification, mutation) or used as a log-hazard (survival). Hue and",
        "density carry comparable weight everywhere, so no single expert sees the whole signal:",
        "",
        "| label | " + " | ".join(LATENT) + " |",
        "|---|" + "---|" * len(LATENT),
        *_label_rows(designs, tasks),
        "",
        "Tile datasets: the classes of a dataset sit on a Latin square of (hue, density) levels, so the",
        "colour-blind encoder tells density levels apart, the colour encoders hue levels, and only both",
        "together name the class.",
        "",
        "## Files",
        "",
        "`slides/` pyramidal TIFFs, `labels/` label tables, `splits/` train/val/test CSVs (per patient),",
        "`tiles/` tile datasets, `truth/latent.csv` the hidden factors (no stage reads it), `demo.done`",
        "the manifest (settings and SHA-256 of every file).",
        "",
    ]
    return "\n".join(lines)

"""The output layout of the data contract (docs/architecture.md), in one place.

The Snakefile and the library both build paths here, so a rule's declared output and the file
a stage writes can never drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


def shard_name(shard: int) -> str:
    """Stable, sortable shard label used in file names and Snakemake wildcards."""
    return f"shard{shard:04d}"


def shard_index(name: str) -> int:
    """Inverse of :func:`shard_name`."""
    if not name.startswith("shard"):
        raise ValueError(f"not a shard name: {name!r} (expected e.g. 'shard0000')")
    return int(name[len("shard"):])


#: The report's tables and plots (file stems), in the order they are written.
REPORT_TABLES = ("benchmark", "ranks", "summary", "cost", "gate_weights", "left_out", "external")
REPORT_PLOTS = ("heatmap", "gains", "gate_weights", "cost", "cost_gain", "external")


@dataclass(frozen=True)
class Layout:
    """Every output path of a run, rooted at ``root`` (the run config's ``results_dir``)."""

    root: Path = Path("results")

    # tiling
    def tiles(self, cohort: str, slide: str) -> Path:
        """One slide's tiles (its existence marks the slide as tiled)."""
        return self.root / "tiles" / cohort / f"{slide}.parquet"

    def tile_shard(self, cohort: str, shard: str) -> Path:
        """The manifest of one tiling shard (which slides it tiled or skipped)."""
        return self.root / "tiles" / cohort / "_shards" / f"{shard}.parquet"

    def tile_index(self, cohort: str) -> Path:
        """The cohort's tile index: every slide tiled without error, with its tile count and tiles file."""
        return self.root / "tiles" / cohort / "_index.parquet"

    def tile_skipped(self, cohort: str) -> Path:
        """The slides of a cohort that could not be tiled, and why."""
        return self.root / "tiles" / cohort / "_skipped.parquet"

    def qc(self, cohort: str, slide: str) -> Path:
        """The tissue and tile-grid picture of one slide, for a person to check."""
        return self.root / "qc" / cohort / f"{slide}.png"

    # embedding
    def features(self, encoder: str, cohort: str, slide: str) -> Path:
        """One slide's tile embeddings by one encoder."""
        return self.root / "features" / encoder / cohort / f"{slide}.safetensors"

    def feature_shard(self, encoder: str, cohort: str, shard: str) -> Path:
        """The manifest of one embedding shard (which slides it embedded)."""
        return self.root / "features" / encoder / cohort / "_shards" / f"{shard}.parquet"

    def tile_features(self, encoder: str, dataset: str) -> Path:
        """One tile dataset's embeddings by one encoder."""
        return self.root / "features" / encoder / f"{dataset}.safetensors"

    def tile_feature_index(self, encoder: str, dataset: str) -> Path:
        """Which image each row of one tile dataset's embeddings is (and its group)."""
        return self.root / "features" / encoder / f"{dataset}.parquet"

    def tile_features_manifest(self, encoder: str) -> Path:
        """Every tile dataset one encoder embedded, with its provenance."""
        return self.root / "features" / encoder / "_tile_datasets.parquet"

    # experts and fusion (seed replicates: experts.n_seeds, docs/methods.md "Seeds")
    def seed_root(self, seed: int | str = 0) -> Path:
        """Where one training seed's experts and fusers live.

        ``root`` for seed 0 (the default run's paths), ``root/seeds/seed{s}`` for a replicate.
        ``seed`` may be the rules' ``"{seed}"`` wildcard. Feature paths have no seed: replicates
        retrain heads on the same embeddings.
        """
        return self.root if seed in (0, "0") else self.root / "seeds" / f"seed{seed}"

    def expert_dir(self, task: str, encoder: str, seed: int | str = 0) -> Path:
        """Everything one expert (task × encoder) writes, for one training seed."""
        return self.seed_root(seed) / "experts" / task / encoder

    def expert_predictions(self, task: str, encoder: str, seed: int | str = 0) -> Path:
        """An expert's predictions, every fold."""
        return self.expert_dir(task, encoder, seed) / "predictions.parquet"

    def expert_curve(self, task: str, encoder: str, seed: int | str = 0) -> Path:
        """An expert's loss and metric per epoch and fold."""
        return self.expert_dir(task, encoder, seed) / "training_curve.parquet"

    def expert_attention(self, task: str, encoder: str, seed: int | str = 0) -> Path:
        """Each test tile's ABMIL attention, per outer fold (empty for tile tasks: no bags)."""
        return self.expert_dir(task, encoder, seed) / "attention.parquet"

    def fusion_dir(self, task: str, method: str, seed: int | str = 0) -> Path:
        """Everything one fusion method writes for a task, for one training seed."""
        return self.seed_root(seed) / "fusion" / task / method

    def fusion_predictions(self, task: str, method: str, seed: int | str = 0) -> Path:
        """A fusion method's predictions, every fold."""
        return self.fusion_dir(task, method, seed) / "predictions.parquet"

    def fusion_model(self, task: str, method: str, seed: int | str = 0) -> Path:
        """A fusion method's fitted folds, as its ``apply`` function reads them (external cohorts, predict)."""
        return self.fusion_dir(task, method, seed) / "model.json"

    def fusion_manifest(self, task: str, seed: int | str = 0) -> Path:
        """A task's fusion manifest: each method's predictions file, digest and SHA-256 (written last).

        The fuse job's one Snakemake-tracked output (pathfuse.plan.fusion says why), and what
        evaluate and report take as input; they read the method files it lists.
        """
        return self.seed_root(seed) / "fusion" / task / "_methods.parquet"

    # external cohorts (task_data.<task>.external) and pathfuse predict
    def external_dir(self, task: str, cohort: str) -> Path:
        """Everything the trained models of ``task`` predict on another cohort."""
        return self.root / "external" / task / cohort

    def external_predictions(self, task: str, cohort: str, source: str) -> Path:
        """One expert's or method's external predictions: per fold and the fold ensemble (fold −1)."""
        return self.external_dir(task, cohort) / source / "predictions.parquet"

    def external_attention(self, task: str, cohort: str, encoder: str) -> Path:
        """Each tile's attention under every fold model of one expert, on the external cohort."""
        return self.external_dir(task, cohort) / encoder / "attention.parquet"

    def external_manifest(self, task: str, cohort: str) -> Path:
        """The predict job's one tracked output, written last: each source's file, or why it is missing."""
        return self.external_dir(task, cohort) / "_predictions.parquet"

    def external_metrics(self, task: str, cohort: str) -> Path:
        """Scores of every source on a labelled external cohort, apart from the cross-validation's."""
        return self.root / "metrics" / "external" / task / f"{cohort}.parquet"

    def predict_figure(self, task: str, cohort: str) -> Path:
        """Attention and gate heatmaps of the slides of a predicted cohort."""
        return self.external_dir(task, cohort) / "heatmaps.png"

    # evaluation + report
    def metrics(self, task: str) -> Path:
        """The long metrics table of one task (docs/architecture.md)."""
        return self.root / "metrics" / f"{task}.parquet"

    def table(self, name: str) -> Path:
        """One of the report's tables (``REPORT_TABLES``), as Parquet."""
        return self.root / "tables" / f"{name}.parquet"

    def expert_curves_figure(self, task: str) -> Path:
        """The report's figure of one task's expert training curves."""
        return self.report_dir() / "curves" / f"{task}.png"

    def attention_figure(self, task: str) -> Path:
        """The report's figure of where each expert looks and whom the gate trusted, per task."""
        return self.report_dir() / "attention" / f"{task}.png"

    def report_dir(self) -> Path:
        """Where the report's HTML pages and figures go."""
        return self.root / "report"

    def report_outputs(self, task_ids: list[str]) -> dict[str, list[Path]]:
        """Every file the report job writes, by kind: the rule declares these, the job writes them."""
        return {
            "tables": [self.table(n) for n in REPORT_TABLES],
            "markdown": [self.table(n).with_suffix(".md") for n in REPORT_TABLES],
            "html": [self.report_dir() / f"{n}.html" for n in REPORT_TABLES],
            "png": [self.report_dir() / f"{p}.png" for p in REPORT_PLOTS],
            "svg": [self.report_dir() / f"{p}.svg" for p in REPORT_PLOTS],
            "curves": [self.expert_curves_figure(t) for t in task_ids],
            "attention": [self.attention_figure(t) for t in task_ids],
        }

    def log(self, rule: str, *parts: str) -> Path:
        """The log of one job of ``rule`` (named by its wildcards), or the rule's own log."""
        return self.root / "logs" / rule / ("_".join(parts) + ".log" if parts else "run.log")

"""The :class:`Planner`: for each stage's unit of work, its input files and its settings payload.

One method per job kind answers "what does this job read?" (files, and the settings that go into
its digest, :mod:`pathfuse.plan.digests`); the package docstring of :mod:`pathfuse.plan` says why.
"""

from __future__ import annotations

import copy
from functools import cache, cached_property
from pathlib import Path
from typing import Any, Literal

from pathfuse.config import Config, TaskSpec
from pathfuse.doctor.rows import generated_by_run
from pathfuse.encoders.levels import writes_levels
from pathfuse.encoders.sources import cohort_encoders, shard_bags, slide_source, tile_source
from pathfuse.paths import shard_name
from pathfuse.plan.checks import check_inputs_at_start
from pathfuse.plan.digests import NO_EFFECT, JobPlan, MethodPlan, folder_fingerprint, narrow, settings_digest
from pathfuse.plan.external import external_cohorts
from pathfuse.plan.fusion import fuse_plan, method_plans
from pathfuse.plan.inner_folds import inner_folds_needed
from pathfuse.seeds import n_seeds, replicate_payload, replicates


class Planner:
    """The job plans of one validated run config (cheap to build; caches cohort listings)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.layout = cfg.layout

    # ------------------------------------------------------------------ settings views
    def section(self, name: str, kind: str | None = None, task: str | None = None) -> dict[str, Any]:
        """A config section without its no-effect keys, narrowed to one task kind / task.

        Per-kind blocks (any ``by_kind`` or ``heads`` mapping) keep only ``kind``'s entry and
        per-task tables (``primary_metric``) only ``task``'s, so a tile-task setting never
        reruns a slide task's job.
        """
        data = copy.deepcopy(self.cfg.section(name))
        for key in NO_EFFECT.get(name, ()):
            data.pop(key, None)
        return narrow(data, kind, task)

    def task_facts(self, task_id: str) -> dict[str, Any]:
        """The registry and ``task_data`` entries of a task, without ``external`` (pathfuse.plan.external)."""
        data = {k: v for k, v in self.cfg.raw["task_data"].get(task_id, {}).items() if k != "external"}
        return {"registry": self.cfg.task_registry[task_id], "data": data}

    def encoder_facts(self, encoder: str) -> dict[str, Any]:
        """The encoder's registry entry (what its embedding jobs read of it, so it enters their digests)."""
        return self.cfg.encoder_entry(encoder)

    # ------------------------------------------------------------------ start-up checks
    def check(self) -> None:
        """Refuse, before any job starts, inputs that are already visibly unusable (:func:`check_inputs_at_start`)."""
        check_inputs_at_start(self.cfg)

    # ------------------------------------------------------------------ demo
    @cached_property
    def demo_dir(self) -> Path | None:
        """The demo's output folder when the run generates the demo, else None."""
        demo = self.cfg.settings.demo
        return Path(demo.out_dir) if demo.enabled else None

    def made_by_demo(self, path: str | Path) -> bool:
        """Whether ``path`` is one of the files the demo_data job writes."""
        return generated_by_run(self.cfg, path)

    def demo_outputs(self) -> dict[str, list[str]]:
        """What demo_data writes that later jobs read: label tables, split CSVs, folders."""
        if self.demo_dir is None:
            return {"files": [], "folders": []}
        ext = [(x.labels, self.cfg.cohort(x.cohort).slides or "") for t in self.cfg.tasks for x in t.external]
        files = {f for t in self.cfg.tasks for f in (t.labels, *self.split_files(t)) if f and self.made_by_demo(f)}
        files.update(labels for labels, _ in ext if labels and self.made_by_demo(labels))  # its external cohort's
        folders = {str(self.demo_dir / "slides")}
        folders.update(str(Path(glob).parent) for _, glob in ext if self.made_by_demo(glob))
        for task in self.cfg.tasks:
            if not task.is_slide_task and self.made_by_demo(self.cfg.tile_dataset(task.dataset or "").path):
                folders.add(self.cfg.tile_dataset(task.dataset or "").path)
        return {"files": sorted(files), "folders": sorted(folders)}

    def demo(self) -> JobPlan:
        """The demo_data job: no input files; the demo section, the seed and the tasks it makes data for."""
        payload = {"demo": self.section("demo"), "seed": self.cfg.seed,
                   "tasks": {t.id: self.task_facts(t.id) for t in self.cfg.tasks}}
        return JobPlan({}, settings_digest(payload))

    # ------------------------------------------------------------------ slides and tiling
    def split_files(self, task: TaskSpec) -> list[str]:
        """A task's split CSVs, one per fold (none unless its split source is ``csv``)."""
        if task.split.get("source") != "csv" or not task.splits:
            return []
        return [task.splits.format(fold=k) for k in range(task.n_folds)]

    def cohort_encoders(self, cohort: str) -> list[str]:
        """Encoders of the run's tasks on ``cohort`` (run order)."""
        return cohort_encoders(self.cfg, cohort)

    def is_byo(self, encoder: str, cohort: str) -> bool:
        """Whether ``encoder``'s features of ``cohort`` are imported rather than computed."""
        return self.encoder_facts(encoder).get("kind") == "byo" or slide_source(self.cfg, encoder, cohort) is not None

    def needs_tiling(self, cohort: str) -> bool:
        """A cohort is tiled when at least one of its encoders computes features from slides."""
        return any(not self.is_byo(e, cohort) for e in self.cohort_encoders(cohort))

    def shard_slide_files(self, cohort: str, shard: int) -> list[str]:
        """The slide files of one shard, or the demo's slide folder while it is to be made."""
        spec = self.cfg.cohort(cohort)
        where = spec.slides or spec.manifest or ""
        if self.made_by_demo(where):  # the demo's slide folder (its external cohort's for that one)
            return [str(Path(where).parent)]
        from pathfuse.slides.cohort import shard_slides

        return sorted(shard_slides(self._slides(cohort), shard, self.cfg.n_shards(cohort))["path"].astype(str))

    @cache  # noqa: B019 - one Planner per run config; the listing is the same for every job
    def _slides(self, cohort: str) -> Any:
        """The cohort's slide table (listed once per planner)."""
        from pathfuse.slides.cohort import list_slides

        return list_slides(self.cfg.cohort(cohort))

    def cohort_tables(self, cohort: str) -> list[str]:
        """The cohort's manifest and mpp override table, where it has them."""
        spec = self.cfg.cohort(cohort)
        return [p for p in (spec.manifest, spec.mpp_overrides) if p]

    def tile(self, cohort: str, shard: int) -> JobPlan:
        """One tiling shard: its slide files and the cohort's tables; tiling settings and the cohort entry."""
        inputs = {"slides": self.shard_slide_files(cohort, shard), "tables": self.cohort_tables(cohort)}
        payload = {"tiling": self.section("tiling"), "cohort": self.cfg.raw["cohorts"].get(cohort),
                   "seed": self.cfg.seed, "shard": shard}
        return JobPlan(inputs, settings_digest(payload))

    def tile_index(self, cohort: str) -> JobPlan:
        """The cohort's tile index: every tile shard (the shards' own digests cover their settings)."""
        shards = [str(self.layout.tile_shard(cohort, shard_name(s))) for s in range(self.cfg.n_shards(cohort))]
        payload = {"cohort": cohort, "n_shards": len(shards)}
        return JobPlan({"shards": shards}, settings_digest(payload))

    # ------------------------------------------------------------------ embedding
    def weight_files(self, encoder: str) -> list[str]:
        """The encoder's local weight file (none for random-weight demo and BYO encoders)."""
        entry = self.encoder_facts(encoder)
        if entry.get("kind") == "byo" or not entry.get("weights"):
            return []
        path = Path(entry["weights"])
        return [str(path if path.is_absolute() else Path(self.cfg.settings.embedding.weights_dir) / path)]

    def embedding_settings(self, encoder: str, stage: Literal["tiles", "slides"]) -> dict[str, Any]:
        """The embedding section as one encoder's jobs of ``stage`` read it: its own BYO sources, its levels."""
        settings = self.section("embedding")
        settings["levels"] = writes_levels(settings.get("levels", False), stage)
        byo = settings.get("byo", {})
        slides, tiles = byo.get("slides", {}).get(encoder), byo.get("tiles", {}).get(encoder)
        imports_slides = self.encoder_facts(encoder).get("kind") == "byo" or slides  # on_bad_file: slide imports only
        settings["byo"] = {"nan_policy": byo.get("nan_policy"), "slides": slides, "tiles": tiles,
                           **({"on_bad_file": byo.get("on_bad_file")} if imports_slides else {})}
        return settings

    def embed_slides(self, encoder: str, cohort: str, shard: int) -> JobPlan:
        """One shard's slide features from ``encoder``: imported bags, or the tile shard and the weights."""
        if self.is_byo(encoder, cohort):
            inputs = {"bags": [str(p) for p in shard_bags(self.cfg, encoder, cohort, shard).values()]}
        else:
            # The slide files reach this job through the tile shard: a changed slide reruns its tile job,
            # which rewrites the shard. Listing them here again would only slow planning.
            inputs = {"tiles": [str(self.layout.tile_shard(cohort, shard_name(shard)))],
                      "weights": self.weight_files(encoder)}
        payload = {"embedding": self.embedding_settings(encoder, "slides"), "encoder": self.encoder_facts(encoder),
                   "cohort": self.cfg.raw["cohorts"].get(cohort), "seed": self.cfg.seed, "shard": shard}
        return JobPlan(inputs, settings_digest(payload))

    def embed_tiles(self, encoder: str) -> JobPlan:
        """``encoder``'s features of the run's tile datasets; folders enter as fingerprints (too many files)."""
        datasets = self.cfg.tile_dataset_ids_for(encoder)
        files = [f for d in datasets for f in self.tile_dataset_files(encoder, d)]
        payload = {"embedding": self.embedding_settings(encoder, "tiles"), "encoder": self.encoder_facts(encoder),
                   "datasets": {d: self.cfg.raw["tile_datasets"].get(d) for d in datasets}, "seed": self.cfg.seed,
                   "listings": {d: self.folder_listing(self.cfg.tile_dataset(d).path) for d in datasets
                                if tile_source(self.cfg, encoder, d) is None}}
        return JobPlan({"datasets": files, "weights": self.weight_files(encoder)}, settings_digest(payload))

    def tile_dataset_files(self, encoder: str, dataset: str) -> list[str]:
        """The files an encoder's embedding of one tile dataset reads: its BYO matrix, if any, and its groups CSV.

        The index records each tile's patient/slide group, so the CSV is an input of embed_tiles and,
        through the index, of every expert, fuser and table after it.
        """
        spec = self.cfg.tile_dataset(dataset)
        groups = [spec.groups] if spec.groups else []
        source = tile_source(self.cfg, encoder, dataset)
        if source is not None:
            return sorted({str(source.path), *groups})
        return sorted({spec.path, *groups})

    @cache  # noqa: B019 - one Planner per run config; each dataset is listed once, not once per encoder
    def folder_listing(self, path: str) -> str | None:
        """A fingerprint of a tile-dataset folder (:func:`~pathfuse.plan.digests.folder_fingerprint`).

        None for a plain file (the file is the input) and for the demo's folders (demo_data's
        digest covers them).
        """
        folder = Path(path)
        if self.made_by_demo(folder) or not folder.is_dir():
            return None
        return folder_fingerprint(folder)

    # ------------------------------------------------------------------ experts and later
    def task_features(self, task: TaskSpec, encoder: str) -> list[str]:
        """The feature files a task's expert reads from one encoder (slide bags or a tile dataset)."""
        if not task.is_slide_task:
            return [str(self.layout.tile_features_manifest(encoder))]
        cohort = task.cohort or ""
        shards = range(self.cfg.n_shards(cohort))
        files = [str(self.layout.feature_shard(encoder, cohort, shard_name(s))) for s in shards]
        if not self.is_byo(encoder, cohort):
            files.append(str(self.layout.tile_skipped(cohort)))
        return files

    def sample_features(self, task: TaskSpec) -> list[str]:
        """The feature manifests of every encoder of a task: what decides its sample set."""
        return list(dict.fromkeys(f for e in task.encoders for f in self.task_features(task, e)))
    def expert(self, task_id: str, encoder: str, seed: int = 0) -> JobPlan:
        """One (task, encoder) expert; ``seed`` > 0 is a replicate (rule ``expert_replicate``).

        Same inputs, and ``replicate`` in the digest (absent for seed 0, so its digest is today's).
        """
        task = self.cfg.task(task_id)
        inputs = {"features": self.sample_features(task),  # the samples all encoders have (data.availability)
                  "labels": [task.labels] if task.is_slide_task and task.labels else [],
                  "splits": self.split_files(task)}
        payload = {"experts": self.section("experts", kind=task.kind), "task": self.task_facts(task_id),
                   "seed": self.cfg.seed, "inner_folds": inner_folds_needed(self.cfg),
                   **replicate_payload(seed)}
        return JobPlan(inputs, settings_digest(payload))

    def fuse(self, task_id: str, seed: int = 0) -> JobPlan:
        """Every fuser of one task on one seed's experts (seed > 0: ``fuse_replicate``); digest: its methods'.

        A changed setting reruns the job; inside it only the methods that read it refit (:mod:`pathfuse.plan.fusion`).
        """
        return fuse_plan(self, task_id, seed)

    def fuse_methods(self, task_id: str, seed: int = 0) -> dict[str, MethodPlan]:
        """Each method inside a task's fuse job: what it reads (:func:`pathfuse.plan.fusion.method_plans`)."""
        return method_plans(self, task_id, seed)

    def evaluate(self, task_id: str) -> JobPlan:
        """Scores of one task: seed 0's predictions, and every replicate's when ``n_seeds`` > 1.

        The replicates' gains give the spread across seeds; ``n_seeds`` enters the digest only then.
        """
        task = self.cfg.task(task_id)
        inputs = {"experts": [str(self.layout.expert_predictions(task_id, e)) for e in task.encoders],
                  "fusion": [str(self.layout.fusion_manifest(task_id))]}
        payload = {"report": self.section("report", kind=task.kind, task=task_id), "task": self.task_facts(task_id),
                   "methods": self.cfg.fusion_methods, "seed": self.cfg.seed}
        if replicates(self.cfg):
            inputs["replicates"] = [str(p) for s in replicates(self.cfg) for p in (
                *(self.layout.expert_predictions(task_id, e, s) for e in task.encoders),
                self.layout.fusion_manifest(task_id, s))]
            payload["n_seeds"] = n_seeds(self.cfg)
        return JobPlan(inputs, settings_digest(payload))

    def report_outputs(self) -> dict[str, list[str]]:
        """Every file the report job writes, by kind (the rule declares exactly these)."""
        return {kind: [str(p) for p in paths] for kind, paths in self.layout.report_outputs(self.cfg.task_ids).items()}

    def report(self) -> JobPlan:
        """The report job: every task's metrics, predictions, curves and attention, and the figures' sources."""
        tasks = self.cfg.tasks
        inputs = {
            "metrics": [str(self.layout.metrics(t.id)) for t in tasks],
            "external": [str(self.layout.external_metrics(t, c)) for t, c, ok in external_cohorts(self.cfg) if ok],
            "fusion": [str(self.layout.fusion_manifest(t.id)) for t in tasks],
            "curves": [str(self.layout.expert_curve(t.id, e)) for t in tasks for e in t.encoders],
            # The attention figures: experts' test predictions and attention, slide thumbnails, tile images.
            "experts": [str(self.layout.expert_predictions(t.id, e)) for t in tasks for e in t.encoders],
            "attention": [str(self.layout.expert_attention(t.id, e)) for t in tasks if t.is_slide_task
                          for e in t.encoders],
            "slides": sorted({f for c in {t.cohort or "" for t in tasks if t.is_slide_task} if self.needs_tiling(c)
                              for f in [str(self.layout.tile_index(c)), *(
                                  p for s in range(self.cfg.n_shards(c)) for p in self.shard_slide_files(c, s))]}),
            "tile_images": sorted({f for t in tasks if not t.is_slide_task for f in self.tile_dataset_files(
                next((e for e in t.encoders if tile_source(self.cfg, e, t.dataset or "") is None), t.encoders[0]),
                t.dataset or "")}),
        }
        payload: dict[str, Any] = {"report": self.section("report"), "encoders": self.cfg.encoder_ids,
                                   "tasks": {t.id: self.task_facts(t.id) for t in tasks},
                                   "methods": self.cfg.fusion_methods}
        if replicates(self.cfg):  # the ranks table's spread-across-seeds columns
            payload["n_seeds"] = n_seeds(self.cfg)
        return JobPlan(inputs, settings_digest(payload))


"""``pathfuse predict``: a finished run's trained models applied to new slides, with what explains them.

``pathfuse predict --run <results_dir> --task T --cohort C`` (and the ``predict`` rule, for every
cohort of ``task_data.<task>.external``) writes, under ``<results_dir>/external/T/C/``, each
expert's and each fusion method's predictions per slide — per fold and the fold ensemble —,
LogitProd's gate weights in its rows, each expert's attention, and ``heatmaps.png``: the report's
attention-and-gate figure drawn on the slides of C where the experts disagree most. No labels
are needed. The run's models are applied only when their recorded settings digests match the
config and the features come from the same encoder weights (:mod:`pathfuse.external.run`).

Outside Snakemake the command first makes the cohort's missing features itself (tiling and
embedding for slide files, the import for a features-only cohort), with the stages' own functions.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

from pathfuse.config import Config
from pathfuse.encoders.sources import cohort_encoders
from pathfuse.external.run import predict_external
from pathfuse.paths import shard_name

log = logging.getLogger(__name__)

#: Slides drawn in ``heatmaps.png`` (those where the experts disagree most).
HEATMAP_SLIDES = 8


def predict_cohort(cfg: Config, task: str, cohort: str, run: str = "") -> Path:
    """Predict ``cohort`` with ``task``'s trained models of the run at ``run`` (default: the config's results_dir)."""
    cfg = with_cohort(cfg, task, cohort, run)
    make_features(cfg, cohort)
    manifest = predict_external(cfg, task, cohort)
    from pathfuse.report.attention import attention_figure
    from pathfuse.report.attention_data import RowSource

    attention_figure(cfg, task, cfg.layout.predict_figure(task, cohort).with_suffix(""), RowSource(cohort),
                     n_slides=HEATMAP_SLIDES)
    return manifest


def with_cohort(cfg: Config, task: str, cohort: str, run: str) -> Config:
    """The config with ``cohort`` among the task's external cohorts (unlabelled if new) and ``run`` as results_dir.

    Neither changes a digest: ``external`` is left out of every trained job's (pathfuse.plan).
    """
    raw = copy.deepcopy(cfg.raw)
    if run:
        raw["results_dir"] = run
    entry = raw.setdefault("task_data", {}).setdefault(task, {})
    if not any(x["cohort"] == cohort for x in entry.get("external", [])):
        entry["external"] = [*entry.get("external", []), {"cohort": cohort}]
    return Config.from_dict(raw)


def make_features(cfg: Config, cohort: str) -> None:
    """Tile, embed or import whatever features of ``cohort`` are missing (a no-op under Snakemake)."""
    layout = cfg.layout
    shards = range(cfg.n_shards(cohort))
    encoders = cohort_encoders(cfg, cohort)
    todo = [(e, s) for e in encoders for s in shards if not layout.feature_shard(e, cohort, shard_name(s)).exists()]
    if not todo:
        return
    from pathfuse.encoders.extract import embed_shard
    from pathfuse.plan import Planner

    if Planner(cfg).needs_tiling(cohort) and not layout.tile_index(cohort).exists():
        from pathfuse.slides.tiling import index_cohort, tile_shard

        for shard in shards:
            tile_shard(cfg, cohort, shard)
        index_cohort(cfg, cohort)
    for encoder, shard in todo:
        log.info("cohort %s: making the features of %s, shard %d", cohort, encoder, shard)
        embed_shard(cfg, encoder, cohort, shard)

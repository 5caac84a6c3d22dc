"""Level features: a run whose methods read them (shazam_levels) must be able to make them.

Level features exist only where pathfuse embeds the tiles itself with an encoder that has a
level rule, and only when ``embedding.levels`` asks for them. Imported features (TRIDENT or
bring-your-own bags, features-only cohorts, tile datasets in ``features`` format) have none: a
run listing such a method on them would train every expert and then stop in the fuse job, so
the start-up check refuses it by name here, before any job.
"""

from __future__ import annotations

from pathfuse.config import Config, TaskSpec
from pathfuse.doctor.rows import FAIL, OK, Row
from pathfuse.encoders import sources
from pathfuse.encoders.levels import level_problem, writes_levels

CHECK = "levels"


def check_levels(cfg: Config, *, deep: bool) -> list[Row]:
    """One row per task when a method of the run reads level features; none otherwise."""
    from pathfuse.fusion import FUSERS

    readers = [m for m in cfg.fusion_methods if m in FUSERS and FUSERS.get(m).needs_levels]
    if not readers:
        return []
    return [_task_row(cfg, task, readers) for task in cfg.tasks]


def _task_row(cfg: Config, task: TaskSpec, readers: list[str]) -> Row:
    from pathfuse.fusion import FUSERS

    names = ", ".join(readers)
    problems = [p for e in task.encoders if (p := _imported(cfg, task, e) or level_problem(e, cfg.encoder_entry(e)))]
    if problems:
        return Row(CHECK, task.id, FAIL, f"{names} read(s) level features, which these inputs cannot give: "
                   + "; ".join(problems), f"drop {names} from fusion.methods, or embed the task's inputs with "
                   "pathfuse (slides or tile images) using encoders that have a level rule")
    applicable = [m for m in readers if FUSERS.get(m).not_applicable(task.is_slide_task) is None]
    if not applicable:
        return Row(CHECK, task.id, OK, f"{names}: not applicable on slide tasks (reported, not fitted)")
    if not writes_levels(cfg.settings.embedding.levels, "slides" if task.is_slide_task else "tiles"):
        return Row(CHECK, task.id, FAIL, f"{names} read(s) level features, but embedding.levels is "
                   f"{cfg.settings.embedding.levels!r}: the embedding writes none",
                   "set embedding.levels: tiles (tile tasks) or true (slides too)")
    return Row(CHECK, task.id, OK, f"level features of {len(task.encoders)} encoder(s) for {names}")


def _imported(cfg: Config, task: TaskSpec, encoder: str) -> str | None:
    """Why the task's features of ``encoder`` are imported (and so have no levels), or None."""
    if task.is_slide_task:
        cohort = task.cohort or ""
        if sources.is_features_only(cfg, cohort):
            return f"cohort {cohort!r} is features only (imported bags have no levels)"
        if sources.slide_source(cfg, encoder, cohort) is not None:
            return f"{sources.source_key(cfg, encoder, cohort)} imports {encoder}'s bags, which have no levels"
        return None
    dataset = task.dataset or ""
    if cfg.tile_dataset(dataset).format == "features":
        return f"tile dataset {dataset!r} is in 'features' format (imported features have no levels)"
    if sources.tile_source(cfg, encoder, dataset) is not None:
        return f"embedding.byo.tiles.{encoder}.{dataset} imports {encoder}'s features, which have no levels"
    return None

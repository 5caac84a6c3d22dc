"""The jobs of external cohorts (``task_data.<task>.external``): what ``predict`` and ``evaluate_external`` read.

Nothing trained reads these settings: ``external`` is left out of every task digest
(:meth:`pathfuse.plan.Planner.task_facts`), so adding a cohort adds its embedding, predict,
evaluate_external and report jobs and reruns no expert, fuser or cross-validation score.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pathfuse.config import Config, ConfigError
from pathfuse.plan.digests import JobPlan, settings_digest
from pathfuse.plan.fusion import Planner


def external_cohorts(cfg: Config) -> list[tuple[str, str, bool]]:
    """Every (task, cohort, labelled) of ``task_data.<task>.external``, in run order (slide tasks only)."""
    tile = [t.id for t in cfg.tasks if t.external and not t.is_slide_task]
    if tile:
        raise ConfigError(f"task_data.{tile[0]}.external: external cohorts are for slide tasks; {tile[0]} is a "
                          "tile task (give its dataset another split instead)")
    return [(t.id, x.cohort, x.labels is not None) for t in cfg.tasks for x in t.external]


def external_entry(cfg: Config, task_id: str, cohort: str) -> dict[str, Any]:
    """The ``task_data.<task>.external`` entry of ``cohort`` (just the cohort when it is not listed)."""
    entries = cfg.raw["task_data"].get(task_id, {}).get("external", [])
    return next((dict(x) for x in entries if x["cohort"] == cohort), {"cohort": cohort})


def predict_plan(plan: Planner, task_id: str, cohort: str) -> JobPlan:
    """The trained models of a task applied to a cohort: its features, the experts' and fusers' tracked outputs.

    The fold weights and fusion models are written before the expert predictions and the fusion
    manifest, so those tracked files stand for them.
    """
    from pathfuse.encoders.sources import external_encoders

    cfg, layout = plan.cfg, plan.layout
    task = cfg.task(task_id)
    on_cohort = replace(task, cohort=cohort)
    features = [f for e in external_encoders(cfg, task, cohort) for f in plan.task_features(on_cohort, e)]
    labels = [x.labels for x in task.external if x.cohort == cohort and x.labels]
    inputs = {"features": list(dict.fromkeys(features)), "labels": labels,
              "experts": [str(layout.expert_predictions(task_id, e)) for e in task.encoders],
              "fusion": [str(layout.fusion_manifest(task_id))]}
    payload = {"task": plan.task_facts(task_id), "external": external_entry(cfg, task_id, cohort),
               "cohort": cfg.raw["cohorts"].get(cohort), "methods": cfg.fusion_methods,
               "experts": plan.section("experts", kind=task.kind), "seed": cfg.seed}
    return JobPlan(inputs, settings_digest(payload))


def evaluate_external_plan(plan: Planner, task_id: str, cohort: str) -> JobPlan:
    """Scores of a labelled external cohort: its predictions manifest; the report settings of the task."""
    task = plan.cfg.task(task_id)
    payload = {"report": plan.section("report", kind=task.kind, task=task_id), "task": plan.task_facts(task_id),
               "external": external_entry(plan.cfg, task_id, cohort), "seed": plan.cfg.seed}
    return JobPlan({"predictions": [str(plan.layout.external_manifest(task_id, cohort))]}, settings_digest(payload))


def external_targets(plan: Planner) -> list[str]:
    """What the run makes of its external cohorts: each one's predictions manifest and heatmaps."""
    return [str(p) for t, c, _ in external_cohorts(plan.cfg)
            for p in (plan.layout.external_manifest(t, c), plan.layout.predict_figure(t, c))]

"""The fuse jobs' plans: one task's job, and each fusion method inside it.

The unit of recomputation is the (task, method): a changed LogitProd setting refits LogitProd
alone. Snakemake still runs one job per task (a method costs seconds, a process importing torch
~3 s), so the job's digest combines its methods' digests: a change reruns the task's job, and
inside it each method compares its own digest plus its input files' content
(:meth:`~pathfuse.plan.digests.MethodPlan.fingerprint`) with the one its predictions file
records, refitting only the methods that differ. The job's one tracked output is the task's
fusion manifest (:meth:`pathfuse.paths.Layout.fusion_manifest`): Snakemake deletes a job's
declared outputs before running it, so declaring the method files would refit them all.
"""

from __future__ import annotations

from typing import Any, Protocol

from pathfuse.config import Config, TaskSpec
from pathfuse.fusion import FUSERS, applicable_methods
from pathfuse.paths import Layout
from pathfuse.plan.digests import JobPlan, MethodPlan, settings_digest
from pathfuse.seeds import replicate_payload


class Planner(Protocol):
    """What these plans read of :class:`pathfuse.plan.Planner` (which delegates its fuse plans here)."""

    cfg: Config
    layout: Layout

    def section(self, name: str, kind: str | None = None, task: str | None = None) -> dict[str, Any]:
        """A config section narrowed to one kind / task."""

    def task_facts(self, task_id: str) -> dict[str, Any]:
        """A task's registry and ``task_data`` entries."""

    def task_features(self, task: TaskSpec, encoder: str) -> list[str]:
        """The feature files a task reads from one encoder."""


def method_settings(plan: Planner, task_id: str, method: str) -> dict[str, Any]:
    """The settings one method reads for one task, narrowed to the task's kind and entries.

    Its block under ``fusion`` (its own, or the one ``Method.settings`` names), ``survival_alpha``,
    and each dotted path of ``Method.reads`` (e.g. ``report.primary_metric``: the task's entry).
    """
    return _settings(plan, task_id, plan.section("fusion", kind=plan.cfg.task(task_id).kind, task=task_id), method)


def _settings(plan: Planner, task_id: str, fusion: dict[str, Any], method: str) -> dict[str, Any]:
    spec = FUSERS.get(method)
    out = {k: fusion[k] for k in (spec.settings or method, "survival_alpha") if k in fusion}
    for dotted in spec.reads:
        section, *keys = dotted.split(".")
        value: Any = plan.section(section, kind=plan.cfg.task(task_id).kind, task=task_id)
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        out[dotted] = value
    return out


def method_plans(plan: Planner, task_id: str, seed: int = 0) -> dict[str, MethodPlan]:
    """Each method of a task's fuse job: the experts' predictions (and features, when it reads them).

    A method's digest covers :func:`method_settings`, its ``options``, the task's entries, the run
    seed and the replicate: nothing another method reads.
    """
    task = plan.cfg.task(task_id)
    experts, features = expert_files(plan, task_id, seed), feature_files(plan, task)
    fusion, facts = plan.section("fusion", kind=task.kind, task=task_id), plan.task_facts(task_id)
    out = {}
    for method in applicable_methods(plan.cfg.fusion_methods, task.is_slide_task):
        spec = FUSERS.get(method)
        payload = {"method": method, "settings": _settings(plan, task_id, fusion, method),
                   "options": dict(spec.options), "task": facts, "seed": plan.cfg.seed, **replicate_payload(seed)}
        out[method] = MethodPlan(experts + (features if spec.needs_features else []), settings_digest(payload))
    return out


def expert_files(plan: Planner, task_id: str, seed: int = 0) -> list[str]:
    """The expert predictions of one task and training seed, in the task's encoder order."""
    return [str(plan.layout.expert_predictions(task_id, e, seed)) for e in plan.cfg.task(task_id).encoders]


def feature_files(plan: Planner, task: TaskSpec) -> list[str]:
    """The feature files (manifests) of every encoder of the task: what the feature-level methods read."""
    return [f for e in task.encoders for f in plan.task_features(task, e)]


def fuse_plan(plan: Planner, task_id: str, seed: int = 0) -> JobPlan:
    """Every method of one task's fuse job: the union of their inputs, a digest of their digests."""
    methods = {m: p.digest for m, p in method_plans(plan, task_id, seed).items()}
    inputs = {"experts": expert_files(plan, task_id, seed), "features": feature_files(plan, plan.cfg.task(task_id))}
    return JobPlan(inputs, settings_digest({"methods": methods}))

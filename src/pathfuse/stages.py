"""The stages: each workflow rule's library function and arguments, in one table.

:data:`STAGES` maps a stage name to its ``module:function`` and keyword arguments; the Snakemake
shim (``workflow/scripts/run_stage.py``) and the ``pathfuse`` command both run stages through
:func:`run_stage`. Kept apart from the command line so a job imports only its own stage.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pathfuse.config import Config


@dataclass(frozen=True)
class Stage:
    """A stage: the function it runs (``module:function``) and its keyword arguments.

    ``optional`` arguments have defaults (``--seed``: 0, the default run), so the unit of work of a
    default run is named exactly as before while replicates can say which seed they train.
    """

    target: str
    help: str
    args: tuple[tuple[str, type], ...] = ()
    optional: tuple[tuple[str, type, Any], ...] = ()

    def function(self) -> Callable[..., Any]:
        """The stage's function, imported when asked for (so a job imports only its own stage)."""
        module, name = self.target.split(":")
        return getattr(importlib.import_module(module), name)


STAGES: dict[str, Stage] = {
    "demo-data": Stage("pathfuse.demo.generate:generate_demo", "generate the synthetic demo cohort"),
    "tile": Stage(
        "pathfuse.slides.tiling:tile_shard", "tile one shard of a cohort's slides",
        (("cohort", str), ("shard", int)),
    ),
    "tile-index": Stage(
        "pathfuse.slides.tiling:index_cohort", "collect a cohort's tiled and skipped slides",
        (("cohort", str),),
    ),
    "embed-slides": Stage(
        "pathfuse.encoders.extract:embed_shard", "embed one shard of a cohort's tiles with one encoder",
        (("encoder", str), ("cohort", str), ("shard", int)),
    ),
    "embed-tiles": Stage(
        "pathfuse.encoders.tile_datasets:embed_tile_datasets",
        "embed every tile dataset of the run's tile tasks with one encoder (skips finished ones)",
        (("encoder", str),),
    ),
    "train-experts": Stage(
        "pathfuse.experts.run:train_experts", "train one encoder's expert head on one task, all folds",
        (("task", str), ("encoder", str)), (("seed", int, 0),),
    ),
    "fuse": Stage(
        "pathfuse.fusion.run:fuse_task", "train every fuser and baseline of one task",
        (("task", str),), (("seed", int, 0),),
    ),
    "evaluate": Stage("pathfuse.evaluation.run:evaluate_task", "score every prediction file of one task",
                      (("task", str),)),
    "predict": Stage(
        "pathfuse.external.predict:predict_cohort",
        "apply a run's trained experts and fusion models to a cohort (new slides or an external test cohort)",
        (("task", str), ("cohort", str)), (("run", str, ""),),
    ),
    "evaluate-external": Stage("pathfuse.external.evaluate:evaluate_external",
                               "score every expert and method on a labelled external cohort",
                               (("task", str), ("cohort", str))),
    "report": Stage("pathfuse.report.run:build_report", "write the benchmark tables and plots"),
}


def run_stage(stage: str, cfg: Config, kwargs: Mapping[str, Any]) -> Any:
    """Run one stage's function with the run config and its unit of work."""
    try:
        spec = STAGES[stage]
    except KeyError:
        raise KeyError(f"unknown stage {stage!r}; known: {', '.join(STAGES)}") from None
    return spec.function()(cfg, **kwargs)

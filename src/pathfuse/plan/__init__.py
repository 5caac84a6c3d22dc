"""The job plan: for each stage's unit of work, its input files and a digest of its settings.

One method per stage of :class:`Planner` (:mod:`pathfuse.plan.planner`) answers "what does this
job read?" — for the Snakemake rules (their ``input:`` and ``params: digest``) and for the
library's own resume checks alike, so the DAG and the code can never disagree about what a
result depends on (docs/architecture.md, Job plan).

* **Inputs** are every file the job reads: label tables, split CSVs, slide files, manifests,
  mpp override tables, weight files, BYO feature files and tile-dataset files, at the finest
  grain (a task's own label table and splits, a shard's own slides). Files the demo generates
  are outputs of ``demo_data`` (:meth:`Planner.demo_outputs`), so a demo run's DAG shows them too.
* **Digest** covers exactly the settings the job reads: its config section with defaults filled
  (only its task kind's entry of per-kind blocks, only its task's entry of per-task tables), the
  registry entries of its task and encoder, the seed, and its cohort/dataset/task_data entries.
  Snakemake's params trigger compares it, so a changed setting reruns exactly the affected jobs
  and, through their outputs, everything downstream. :data:`NO_EFFECT` lists, on purpose, the
  settings that cannot change a result; anything that can change floats stays in
  (:mod:`pathfuse.plan.digests`).
* **Start-up checks** refuse visibly unusable inputs before any job starts
  (:mod:`pathfuse.plan.checks`, run by the Snakefile through :meth:`Planner.check`).

The digest text starts with :data:`DIGEST_FORMAT`: a refactor that changes how settings are
represented bumps it deliberately (and reruns everything, saying so in the changelog) instead of
silently; a new pathfuse version alone reruns nothing (``snakemake --forcerun`` forces it).

This package stays free of torch: the Snakefile imports it at every start.
"""

from __future__ import annotations

from pathfuse.plan.digests import DIGEST_FORMAT, NO_EFFECT, JobPlan, settings_digest
from pathfuse.plan.inner_folds import inner_folds_needed
from pathfuse.plan.planner import Planner

__all__ = ["DIGEST_FORMAT", "NO_EFFECT", "JobPlan", "Planner", "inner_folds_needed", "settings_digest"]

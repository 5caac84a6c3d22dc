"""Seed replicates (``experts.n_seeds``): training randomness, reported next to the bootstrap CI.

With ``n_seeds`` = n > 1 every expert and fuser is trained n times, each replicate a separate job
(rules ``expert_replicate``/``fuse_replicate``) so a cluster runs them in parallel. Only the
training seed changes (:func:`replicate_parts`); folds, splits, inner partitions and bootstrap
resamples stay those of seed 0, so replicates differ by training randomness alone. Seed 0 is
today's run (same seeds, paths and digests): a default run (n_seeds 1) is bit-identical to a run
without the key.

Per seed, the gain of a method is the mean over folds of its per-fold differences against that
seed's own validation-selected best expert (:func:`seed_gain_rows`). The reported gain, CI and
p-value stay seed 0's; the spread across seeds is a separate column, never pooled into the
bootstrap (which resamples test patients, not training runs; docs/methods.md "Seeds").
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pathfuse.config import Config, TaskSpec

#: ``statistic`` of the metrics rows holding one seed's gain (mean over folds of the deltas).
SEED_STATISTIC = "seed"


def n_seeds(cfg: Config) -> int:
    """How many training seeds the run has (``experts.n_seeds``)."""
    return cfg.settings.experts.n_seeds


def replicates(cfg: Config) -> list[int]:
    """The replicate seeds beyond seed 0 (``[1, …, n_seeds − 1]``; empty in a default run)."""
    return list(range(1, n_seeds(cfg)))


def replicate_parts(seed: int) -> tuple[Any, ...]:
    """Extra :func:`pathfuse.reproducibility.derive_seed` parts of a replicate.

    None for seed 0 (so its seeds are today's), ``("replicate", s)`` otherwise.
    """
    return ("replicate", int(seed)) if seed else ()


def replicate_payload(seed: int) -> dict[str, int]:
    """What a replicate adds to a job's settings digest: nothing for seed 0 (digests unchanged)."""
    return {"replicate": int(seed)} if seed else {}


def seed_gain_rows(cfg: Config, task: TaskSpec, metric: str, folds: list[int],
                   seed0: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    """Each method's gain on every training seed: rows ``statistic == "seed"`` of the metrics table.

    Seed 0's value is the gain the table reports (its ``delta_<metric>`` mean row of ``seed0``);
    replicate s is scored like seed 0 (same folds, same shared-patient rule) against **its own**
    validation-selected best expert, and its gain is the mean over the folds with a defined
    difference. No bootstrap per replicate: the CI stays seed 0's test-sampling CI; the seeds give
    the spread of training randomness, reported beside it (never pooled into it).

    Returns:
        The rows (metrics columns plus ``seed``) and each seed's reference (for the metadata).
    """
    from pathfuse.evaluation.reference import choose_reference, describe_reference
    from pathfuse.evaluation.scoring import score_folds
    from pathfuse.evaluation.sources import expected_sources, load_source
    from pathfuse.evaluation.table import DELTA_PREFIX, metrics_frame

    delta = DELTA_PREFIX + metric
    mean0 = seed0[(seed0["metric"] == delta) & (seed0["statistic"] == "mean")]
    frames = [mean0.assign(statistic=SEED_STATISTIC, note="seed 0 (the reported gain)", seed=0)]
    references = {"0": str(mean0["reference"].iloc[0]) if len(mean0) else ""}
    for s in replicates(cfg):
        sources = expected_sources(cfg, task, s)
        loaded = [x for x in (load_source(src, task) for src in sources) if x is not None]
        _, scores = score_folds(cfg, task, loaded, folds, [metric], n_resamples=0)
        experts = [x for x in loaded if x.source.family == "expert"]
        chosen, _, _ = choose_reference(cfg, task, experts, folds, metric)
        reference = references[str(s)] = describe_reference(chosen)
        rows = []
        for src in sources:
            own = scores.get(src.method, {})
            diffs = [own[f][metric][0] - scores[str(chosen[f])][f][metric][0] if f in own and chosen[f]
                     else np.nan for f in folds]
            whole = all(f in own for f in folds) and all(chosen.values())
            value = float(np.nanmean(diffs)) if whole and not np.all(np.isnan(diffs)) else np.nan
            status = "ok" if whole and not np.isnan(value) else ("missing" if not whole else "undefined")
            note = f"seed {s}" if whole else f"seed {s}: {src.path} missing or lacks folds"
            rows.append({"task": task.id, "kind": task.kind, "method": src.method, "family": src.family,
                         "encoder": src.encoder, "fold": -1, "statistic": SEED_STATISTIC, "split": "test",
                         "metric": delta, "value": value, "n_patients": 0, "n_samples": 0, "n_undefined": 0,
                         "status": status, "note": note,
                         "reference": reference, "ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan})
        frames.append(metrics_frame(rows).assign(seed=s))
    out = pd.concat(frames, ignore_index=True)
    out["family"] = out["family"].fillna(out["method"].map(mean0.set_index("method")["family"]))
    return out.astype({"seed": "int64"}), references

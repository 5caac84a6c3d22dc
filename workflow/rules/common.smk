# Input functions shared by the rules (included first by the Snakefile): which files a job needs,
# derived from the validated run config (CFG) and the path layout (L).


def cohort_shards(cohort):
    """Shard names of a cohort (docs/architecture.md, Jobs)."""
    return [shard_name(i) for i in range(CFG.n_shards(cohort))]


def cohort_label_tables(wildcards):
    """Label tables of the run's tasks on this cohort (index_cohort cross-checks them).

    The demo's label tables come out of demo_data, so there the demo marker stands for them.
    """
    if DEMO_DONE:
        return DEMO_DONE
    return sorted({t.labels for t in CFG.tasks if t.is_slide_task and t.cohort == wildcards.cohort})


def task_features(task_id, encoder):
    """The feature files a task needs from one encoder (slide bags or a tile dataset)."""
    task = CFG.task(task_id)
    if task.is_slide_task:
        return [L.feature_shard(encoder, task.cohort, s) for s in cohort_shards(task.cohort)] + [
            L.tile_skipped(task.cohort)
        ]
    return [L.tile_features_manifest(encoder)]


def fusion_inputs(wildcards):
    """Expert predictions of the task, plus the features Shazam and concat re-read."""
    task = CFG.task(wildcards.task)
    experts = [L.expert_predictions(task.id, e) for e in task.encoders]
    features = [f for e in task.encoders for f in task_features(task.id, e)]
    return {"experts": experts, "features": features}


def evaluate_inputs(wildcards):
    """Every prediction file the task's metrics come from: its experts and fusion methods."""
    task = CFG.task(wildcards.task)
    return {
        "experts": [L.expert_predictions(task.id, e) for e in task.encoders],
        "fusion": [L.fusion_predictions(task.id, m) for m in FUSION_METHODS],
    }

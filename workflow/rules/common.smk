# Input functions shared by the rules (included first by the Snakefile). Each rule reads its
# inputs and its settings digest from the job plan (pathfuse.plan, PLAN in the Snakefile), so
# the DAG and the library agree on what every job depends on.


def cohort_shards(cohort):
    """Shard names of a cohort (docs/architecture.md, Jobs)."""
    return [shard_name(i) for i in range(CFG.n_shards(cohort))]


def tile_plan(wildcards):
    return PLAN.tile(wildcards.cohort, shard_index(wildcards.shard))


def embed_slides_plan(wildcards):
    return PLAN.embed_slides(wildcards.encoder, wildcards.cohort, shard_index(wildcards.shard))


def expert_plan(wildcards):
    return PLAN.expert(wildcards.task, wildcards.encoder)

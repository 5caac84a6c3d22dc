# Stage 1a: tile grids per slide (OpenSlide), one job per (cohort, shard of slides). Only cohorts
# with an encoder that computes features are tiled; features-only cohorts skip this stage.


rule tile:
    input:
        unpack(lambda w: tile_plan(w).inputs),
    output:
        L.tile_shard("{cohort}", "{shard}"),
    log:
        L.log("tile", "{cohort}", "{shard}"),
    conda:
        "../../envs/slides.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        stage="tile",
        kwargs=lambda w: {"cohort": w.cohort, "shard": shard_index(w.shard)},
        digest=lambda w: tile_plan(w).digest,
    script:
        "../scripts/run_stage.py"


rule tile_index:
    input:
        unpack(lambda w: PLAN.tile_index(w.cohort).inputs),
    output:
        index=L.tile_index("{cohort}"),
        skipped=L.tile_skipped("{cohort}"),
    log:
        L.log("tile_index", "{cohort}"),
    conda:
        "../../envs/slides.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        stage="tile-index",
        kwargs=lambda w: {"cohort": w.cohort},
        digest=lambda w: PLAN.tile_index(w.cohort).digest,
    script:
        "../scripts/run_stage.py"

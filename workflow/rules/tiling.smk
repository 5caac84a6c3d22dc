# Stage 1a: tile grids per slide (OpenSlide), one job per (cohort, shard of slides).


rule tile:
    input:
        DEMO_DONE,
    output:
        L.tile_shard("{cohort}", "{shard}"),
    log:
        L.log("tile", "{cohort}", "{shard}"),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    conda:
        "../../envs/slides.yaml"
    params:
        stage="tile",
        kwargs=lambda w: {"cohort": w.cohort, "shard": shard_index(w.shard)},
    script:
        "../scripts/run_stage.py"


rule tile_index:
    input:
        shards=lambda w: [L.tile_shard(w.cohort, s) for s in cohort_shards(w.cohort)],
        labels=cohort_label_tables,
    output:
        index=L.tile_index("{cohort}"),
        skipped=L.tile_skipped("{cohort}"),
    log:
        L.log("tile_index", "{cohort}"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/slides.yaml"
    params:
        stage="tile-index",
        kwargs=lambda w: {"cohort": w.cohort},
    script:
        "../scripts/run_stage.py"

# Stage 1b: embeddings per foundation model. GPU jobs on a cluster (resources gpu=1); the
# same code runs on CPU where there is none.


rule embed_slides:
    input:
        tiles=L.tile_shard("{cohort}", "{shard}"),
    output:
        L.feature_shard("{encoder}", "{cohort}", "{shard}"),
    log:
        L.log("embed_slides", "{encoder}", "{cohort}", "{shard}"),
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=720,
    conda:
        "../../envs/torch.yaml"
    params:
        stage="embed-slides",
        kwargs=lambda w: {"encoder": w.encoder, "cohort": w.cohort, "shard": shard_index(w.shard)},
    script:
        "../scripts/run_stage.py"


rule embed_tiles:
    input:
        DEMO_DONE,
    output:
        features=L.tile_features("{encoder}", "{dataset}"),
        index=L.tile_feature_index("{encoder}", "{dataset}"),
    log:
        L.log("embed_tiles", "{encoder}", "{dataset}"),
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=720,
    conda:
        "../../envs/torch.yaml"
    params:
        stage="embed-tiles",
        kwargs=lambda w: {"encoder": w.encoder, "dataset": w.dataset},
    script:
        "../scripts/run_stage.py"

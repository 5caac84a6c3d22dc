# Stage 1b: embeddings per foundation model. GPU jobs on a cluster (resources gpu=1); the
# same code runs on CPU where there is none.


rule embed_slides:
    input:
        unpack(lambda w: embed_slides_plan(w).inputs),
    output:
        L.feature_shard("{encoder}", "{cohort}", "{shard}"),
    log:
        L.log("embed_slides", "{encoder}", "{cohort}", "{shard}"),
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=720,
    params:
        stage="embed-slides",
        kwargs=lambda w: {"encoder": w.encoder, "cohort": w.cohort, "shard": shard_index(w.shard)},
        digest=lambda w: embed_slides_plan(w).digest,
    script:
        "../scripts/run_stage.py"


rule embed_tiles:
    # One job per encoder: the model is built once for all tile datasets. Per-dataset files are
    # written inside the job (a re-run skips finished ones); the manifest, written last, is tracked.
    input:
        unpack(lambda w: PLAN.embed_tiles(w.encoder).inputs),
    output:
        L.tile_features_manifest("{encoder}"),
    log:
        L.log("embed_tiles", "{encoder}"),
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=720,
    params:
        stage="embed-tiles",
        kwargs=lambda w: {"encoder": w.encoder},
        digest=lambda w: PLAN.embed_tiles(w.encoder).digest,  # covers the dataset list
    script:
        "../scripts/run_stage.py"

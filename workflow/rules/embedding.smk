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
    # One job per encoder: the model is built once for all tile datasets. Per-dataset files are
    # written inside the job (a re-run skips finished ones); the manifest, written last, is tracked.
    input:
        DEMO_DONE,
    output:
        L.tile_features_manifest("{encoder}"),
    log:
        L.log("embed_tiles", "{encoder}"),
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=720,
    conda:
        "../../envs/torch.yaml"
    params:
        stage="embed-tiles",
        kwargs=lambda w: {"encoder": w.encoder},
        datasets=lambda w: CFG.tile_dataset_ids_for(w.encoder),  # a changed list re-runs the job
    script:
        "../scripts/run_stage.py"

# Stage 2b: every fuser and baseline of one task in one job (all methods, all folds).


rule fuse:
    input:
        unpack(fusion_inputs),
    output:
        [L.fusion_predictions("{task}", m) for m in FUSION_METHODS],
    log:
        L.log("fuse", "{task}"),
    threads: 1
    resources:
        mem_mb=8000,
        runtime=240,
    conda:
        "../../envs/torch.yaml"
    params:
        stage="fuse",
        kwargs=lambda w: {"task": w.task},
    script:
        "../scripts/run_stage.py"

# Stage 2b: every fuser and baseline of one task in one job (all methods, all folds).


rule fuse:
    input:
        unpack(lambda w: PLAN.fuse(w.task).inputs),
    output:
        [L.fusion_predictions("{task}", m) for m in CFG.fusion_methods],
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
        digest=lambda w: PLAN.fuse(w.task).digest,
    script:
        "../scripts/run_stage.py"

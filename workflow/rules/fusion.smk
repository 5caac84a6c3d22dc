# Stage 2b: every fuser and baseline of one task in one job (all methods, all folds).


def fusion_inputs(wildcards):
    """Expert predictions of the task, plus the features Shazam and concat re-read."""
    task = CFG.task(wildcards.task)
    experts = [L.expert_predictions(task.id, e) for e in task.encoders]
    features = [f for e in task.encoders for f in task_features(task.id, e)]
    return {"experts": experts, "features": features}


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

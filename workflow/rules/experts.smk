# Stage 2a: one expert head per (task, encoder), all folds and inner OOF folds in one job.


rule expert:
    input:
        unpack(lambda w: expert_plan(w).inputs),
    output:
        predictions=L.expert_predictions("{task}", "{encoder}"),
        curve=L.expert_curve("{task}", "{encoder}"),
        attention=L.expert_attention("{task}", "{encoder}"),
    log:
        L.log("expert", "{task}", "{encoder}"),
    threads: 1
    resources:
        mem_mb=8000,
        runtime=240,
    conda:
        "../../envs/torch.yaml"
    params:
        stage="train-experts",
        kwargs=lambda w: {"task": w.task, "encoder": w.encoder},
        digest=lambda w: expert_plan(w).digest,
    script:
        "../scripts/run_stage.py"

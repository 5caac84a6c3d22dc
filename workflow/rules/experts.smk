# Stage 2a: one expert head per (task, encoder), all folds and inner OOF folds in one job.


rule expert:
    input:
        features=lambda w: task_features(w.task, w.encoder),
        labels=DEMO_DONE,
    output:
        predictions=L.expert_predictions("{task}", "{encoder}"),
        curve=L.expert_curve("{task}", "{encoder}"),
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
    script:
        "../scripts/run_stage.py"

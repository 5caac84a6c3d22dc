# External cohorts (task_data.<task>.external) and new slides: the trained experts and fusion
# models of a task applied to another cohort, never refitted (src/pathfuse/external/). Adding a
# cohort adds only its embedding, predict, evaluate_external and report jobs: no trained job reads it.


rule predict:
    input:
        unpack(lambda w: predict_plan(PLAN, w.task, w.cohort).inputs),
    output:
        manifest=L.external_manifest("{task}", "{cohort}"),
        heatmaps=L.predict_figure("{task}", "{cohort}"),
    log:
        L.log("predict", "{task}", "{cohort}"),
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        stage="predict",
        kwargs=lambda w: {"task": w.task, "cohort": w.cohort},
        digest=lambda w: predict_plan(PLAN, w.task, w.cohort).digest,
    script:
        "../scripts/run_stage.py"


rule evaluate_external:
    input:
        unpack(lambda w: evaluate_external_plan(PLAN, w.task, w.cohort).inputs),
    output:
        L.external_metrics("{task}", "{cohort}"),
    log:
        L.log("evaluate_external", "{task}", "{cohort}"),
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        stage="evaluate-external",
        kwargs=lambda w: {"task": w.task, "cohort": w.cohort},
        digest=lambda w: evaluate_external_plan(PLAN, w.task, w.cohort).digest,
    script:
        "../scripts/run_stage.py"

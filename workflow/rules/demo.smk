# The synthetic demo cohort (only when config demo.enabled): slides, tile datasets, labels, splits.
# Its label tables, split CSVs and folders are declared outputs, so the jobs that read them
# depend on them one by one (an edited demo label table reruns only the tasks that read it).


rule demo_data:
    output:
        DEMO_DONE,
        PLAN.demo_outputs()["files"],
        [directory(d) for d in PLAN.demo_outputs()["folders"]],
    log:
        L.log("demo_data"),
    conda:
        "../../envs/slides.yaml"
    threads: DEMO.get("workers", 2)
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        stage="demo-data",
        kwargs={},
        digest=PLAN.demo().digest,
    script:
        "../scripts/run_stage.py"

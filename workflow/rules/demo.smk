# The synthetic demo cohort (only when config demo.enabled): slides, tile datasets, labels, splits.


rule demo_data:
    output:
        DEMO_DONE,
    log:
        L.log("demo_data"),
    threads: DEMO.get("workers", 2)
    resources:
        mem_mb=2000,
        runtime=15,
    conda:
        "../../envs/slides.yaml"
    params:
        stage="demo-data",
        kwargs={},
    script:
        "../scripts/run_stage.py"

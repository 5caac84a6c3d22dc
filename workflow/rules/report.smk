# Stage 3: score every prediction file of a task (evaluate), then the run's benchmark tables,
# their Markdown/HTML copies and the plots (report). `snakemake --report results/report.html`
# collects the HTML tables and PNG plots marked with report() below, with their captions.


rule evaluate:
    input:
        unpack(lambda w: PLAN.evaluate(w.task).inputs),
    output:
        L.metrics("{task}"),
    log:
        L.log("evaluate", "{task}"),
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        stage="evaluate",
        kwargs=lambda w: {"task": w.task},
        digest=lambda w: PLAN.evaluate(w.task).digest,
    script:
        "../scripts/run_stage.py"


rule report:
    input:
        **PLAN.report().inputs,
    output:
        tables=PLAN.report_outputs()["tables"],
        markdown=PLAN.report_outputs()["markdown"],
        html=[
            report(path, caption=f"../report/table_{name}.rst", category="Tables")
            for name, path in zip(REPORT_TABLES, PLAN.report_outputs()["html"])
        ],
        png=[
            report(path, caption=f"../report/plot_{name}.rst", category="Figures")
            for name, path in zip(REPORT_PLOTS, PLAN.report_outputs()["png"])
        ],
        svg=PLAN.report_outputs()["svg"],
        curves=[
            report(
                path,
                caption="../report/plot_curves.rst",
                category="Expert training curves",
                subcategory=CFG.task(task).kind,
            )
            for task, path in zip(TASKS, PLAN.report_outputs()["curves"])
        ],
        attention=[
            report(
                path,
                caption="../report/plot_attention.rst",
                category="Attention and gate heatmaps",
                subcategory=CFG.task(task).kind,
            )
            for task, path in zip(TASKS, PLAN.report_outputs()["attention"])
        ],
    log:
        L.log("report"),
    conda:
        "../../envs/report.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        stage="report",
        kwargs={},
        digest=PLAN.report().digest,
    script:
        "../scripts/run_stage.py"

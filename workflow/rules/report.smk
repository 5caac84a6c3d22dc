# Stage 3: score every prediction file of a task (evaluate), then the run's benchmark tables,
# their Markdown/HTML copies and the plots (report). `snakemake --report results/report.html`
# collects the HTML tables and PNG plots marked with report() below, with their captions.


REPORT_PLOTS = ["heatmap", "gains", "gate_weights", "cost"]


rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        L.metrics("{task}"),
    log:
        L.log("evaluate", "{task}"),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    conda:
        "../../envs/report.yaml"
    params:
        stage="evaluate",
        kwargs=lambda w: {"task": w.task},
    script:
        "../scripts/run_stage.py"


rule report:
    input:
        metrics=[L.metrics(t) for t in TASKS],
        # cost (metadata) and LogitProd's gate weights are read from the fusion predictions
        fusion=[L.fusion_predictions(t, m) for t in TASKS for m in FUSION_METHODS],
        curves=[L.expert_curve(t, e) for t in TASKS for e in CFG.task(t).encoders],
    output:
        tables=[L.table(n) for n in REPORT_TABLES],
        markdown=[L.table(n).with_suffix(".md") for n in REPORT_TABLES],
        html=[
            report(L.report_dir() / f"{n}.html", caption=f"../report/table_{n}.rst", category="Tables")
            for n in REPORT_TABLES
        ],
        png=[
            report(L.report_dir() / f"{p}.png", caption=f"../report/plot_{p}.rst", category="Figures")
            for p in REPORT_PLOTS
        ],
        svg=[L.report_dir() / f"{p}.svg" for p in REPORT_PLOTS],
        curves=[
            report(
                L.expert_curves_figure(t),
                caption="../report/plot_curves.rst",
                category="Expert training curves",
                subcategory=CFG.task(t).kind,
            )
            for t in TASKS
        ],
    log:
        L.log("report"),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../../envs/report.yaml"
    params:
        stage="report",
        kwargs={},
    script:
        "../scripts/run_stage.py"

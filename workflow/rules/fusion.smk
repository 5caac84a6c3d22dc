# Stage 2b: every fuser and baseline of one task in one job (all methods, all folds).
# The unit of recomputation is the (task, method): the job's digest combines its methods'
# digests, and inside the job a method whose own digest (settings it reads + content of the
# files it reads) matches its predictions file is kept, not refitted. The one tracked output is
# the task's fusion manifest, written last: Snakemake deletes declared outputs before a job
# runs, so declaring the method files would refit them all (src/pathfuse/plan/fusion.py).


rule fuse:
    input:
        unpack(lambda w: PLAN.fuse(w.task).inputs),
    output:
        L.fusion_manifest("{task}"),
    log:
        L.log("fuse", "{task}"),
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=240,
    params:
        stage="fuse",
        kwargs=lambda w: {"task": w.task},
        digest=lambda w: PLAN.fuse(w.task).digest,
    script:
        "../scripts/run_stage.py"


# Seed replicates (experts.n_seeds > 1): every fuser of a task on replicate {seed}'s experts.
rule fuse_replicate:
    input:
        unpack(lambda w: PLAN.fuse(w.task, int(w.seed)).inputs),
    output:
        L.fusion_manifest("{task}", "{seed}"),
    log:
        L.log("fuse", "{task}", "seed{seed}"),
    wildcard_constraints:
        seed=r"[1-9]\d*",
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=240,
    params:
        stage="fuse",
        kwargs=lambda w: {"task": w.task, "seed": int(w.seed)},
        digest=lambda w: PLAN.fuse(w.task, int(w.seed)).digest,
    script:
        "../scripts/run_stage.py"

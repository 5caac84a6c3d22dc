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
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=240,
    params:
        stage="train-experts",
        kwargs=lambda w: {"task": w.task, "encoder": w.encoder},
        digest=lambda w: expert_plan(w).digest,
    script:
        "../scripts/run_stage.py"


# Seed replicates (experts.n_seeds > 1): the same expert trained from training seed {seed} >= 1,
# one job each so a cluster runs them side by side; seed 0 is the rule above (docs/methods.md, Seeds).
rule expert_replicate:
    input:
        unpack(lambda w: PLAN.expert(w.task, w.encoder, int(w.seed)).inputs),
    output:
        predictions=L.expert_predictions("{task}", "{encoder}", "{seed}"),
        curve=L.expert_curve("{task}", "{encoder}", "{seed}"),
        attention=L.expert_attention("{task}", "{encoder}", "{seed}"),
    log:
        L.log("expert", "{task}", "{encoder}", "seed{seed}"),
    wildcard_constraints:
        seed=r"[1-9]\d*",
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=240,
    params:
        stage="train-experts",
        kwargs=lambda w: {"task": w.task, "encoder": w.encoder, "seed": int(w.seed)},
        digest=lambda w: PLAN.expert(w.task, w.encoder, int(w.seed)).digest,
    script:
        "../scripts/run_stage.py"

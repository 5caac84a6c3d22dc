"""Many heads in one bank learn as well as each head alone: within the loop's seed-to-seed spread.

The bank's one deliberate change is that heads share the order in which samples are drawn
(docs/methods.md, Head bank). On a synthetic cohort every head of an expert job (3 outer folds
× (1 outer + 3 inner models)) is trained alone under 4 training seeds (``experts.replicates``:
today's loop, which a one-head bank reproduces bit for bit) and once in the bank. The bank
counts as one more seed: its heads' validation losses and test AUROCs may differ from the
loop's mean over seeds, head by head, by no more on average than the loop's own seeds differ
from the mean of the other seeds (measured: val loss 0.096 vs 0.109-0.174 per seed, test AUROC
0.079 vs 0.080-0.115).
"""

from __future__ import annotations

import numpy as np
import pytest
from support.synthetic_experts import ENCODER, classification_cohort, make_config

from pathfuse.evaluation.metrics import score
from pathfuse.experts.fold import fold_heads, plan_fold
from pathfuse.experts.job import Job
from pathfuse.experts.predict import predict_rows
from pathfuse.experts.resume import fold_fingerprint
from pathfuse.heads.bank import BankHead, BankRecipe, train_bank
from pathfuse.reproducibility import derive_seed

pytestmark = pytest.mark.usefixtures("one_thread")
SEEDS = 4


def _heads(job: Job) -> tuple[list, list[BankHead], list[int]]:
    plans = [plan_fold(job, fold, fold_fingerprint(job, fold)) for fold in job.folds]
    heads, seeds, owners = [], [], []
    for plan in plans:
        heads += fold_heads(job, plan)
        seeds += [plan.seed] + [derive_seed(plan.seed, "inner", j) for j in range(len(plan.partitions))]
        owners += [plan] * (1 + len(plan.partitions))
    return owners, heads, seeds


def _train(job: Job, heads: list[BankHead], seed: int) -> list[float]:
    recipe = job.recipe
    results = train_bank(
        heads,
        (job.dataset(job.samples, {}, True, seed + 1), job.dataset(job.samples, {}, False, seed)),
        job.collate,
        BankRecipe(epochs=recipe.epochs, lr=recipe.lr, weight_decay=recipe.weight_decay,
                   batch_size=recipe.batch_size, patience=recipe.patience, monitor="loss", mode="min"),
        seed=seed,
    )
    return [r.best_value for r in results]


def _test_auroc(job: Job, plan, head: BankHead) -> float:
    rows = predict_rows(job, head.model, plan.test, plan.objective, plan.fold.index, "test", oof=False)
    return float(score(job.spec, rows)["auroc"])


def test_each_banked_head_scores_within_the_loops_seed_to_seed_spread(tmp_path):
    classification_cohort(tmp_path, n_patients=48).to_csv(tmp_path / "labels_bin.csv", index=False)
    cfg = make_config(tmp_path, ["tbin"])
    loop_val, loop_test = [], []
    for replicate in range(SEEDS):
        job = Job.create(cfg, "tbin", ENCODER, replicate)
        owners, heads, seeds = _heads(job)
        loop_val.append([_train(job, [head], seed)[0] for head, seed in zip(heads, seeds, strict=True)])
        loop_test.append([_test_auroc(job, plan, head) for plan, head in zip(owners, heads, strict=True)])
    job = Job.create(cfg, "tbin", ENCODER, 0)
    owners, heads, seeds = _heads(job)
    bank_val = _train(job, heads, seeds[0])
    bank_test = [_test_auroc(job, plan, head) for plan, head in zip(owners, heads, strict=True)]
    assert len(heads) == 12
    for name, loop, bank in (("val loss", loop_val, bank_val), ("test auroc", loop_test, bank_test)):
        runs = np.array(loop)  # [seed, head]
        # how far one seed of the loop lands from the other seeds' mean, head by head, on average
        seed_gaps = [np.abs(runs[r] - np.delete(runs, r, axis=0).mean(axis=0)).mean() for r in range(SEEDS)]
        bank_gap = np.abs(np.array(bank) - runs.mean(axis=0)).mean()
        assert bank_gap <= np.mean(seed_gaps), f"{name}: bank {bank_gap:.3f} vs seeds {np.round(seed_gaps, 3)}"

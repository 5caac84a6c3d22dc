"""``train_on`` of the logit-level learners: the rows each learns from, what it records, what the plan trains."""

from __future__ import annotations

import numpy as np
import pytest
from support.synthetic import TASK_OF_KIND, SyntheticTask, fast_fusion_settings, write_synthetic_task

from pathfuse.config import Config
from pathfuse.fusion import FUSERS
from pathfuse.fusion.context import READS
from pathfuse.fusion.inputs import load_context
from pathfuse.plan import Planner, inner_folds_needed

LEARNERS = ("logitprod", "logitprod_converged", "stacking")


def _fusion(train_on: str, methods=LEARNERS) -> dict:
    fusion = fast_fusion_settings()
    fusion["methods"] = list(methods)
    fusion["logitprod"].update(train_on=train_on, val_folds=3, val_corr_weights=[0.0, 0.1],
                               val_weight_decays=[1e-4, 1.0])
    fusion["logitprod_converged"] = {"train_on": train_on, "corr_weights": [0.0, 0.1], "weight_decays": [0.0, 1e-2],
                                     "max_iter": 100, "val_folds": 3}
    fusion["stacking"].update(train_on=train_on)
    return fusion


def _context(tmp_path, train_on: str, kind: str = "mutation"):
    cfg = write_synthetic_task(tmp_path, SyntheticTask(task=TASK_OF_KIND[kind], n_samples=120, n_folds=2),
                               _fusion(train_on), with_features=False)
    return load_context(cfg, TASK_OF_KIND[kind])


@pytest.mark.parametrize("train_on", ["oof", "val", "in_sample"])
def test_each_learner_records_the_rows_it_read_whatever_the_context_holds(tmp_path, train_on):
    ctx = _context(tmp_path, train_on)
    assert ctx.has_block(0, "train", True)  # the experts wrote out-of-fold rows (another method may want them)
    for method in LEARNERS:
        cost = FUSERS.get(method).fit_fold(ctx, 0).cost
        assert cost["trained_on"] == train_on, method
        assert cost["logits_read"] == READS[train_on], method
        assert cost["uses_inner_experts"] is (train_on == "oof"), method


@pytest.mark.parametrize(("method", "kind"), [("logitprod", "mutation"), ("logitprod", "survival"),
                                              ("logitprod_converged", "wsi_classification"),
                                              ("stacking", "mutation")])
def test_val_learners_never_read_test_or_training_rows(tmp_path, method, kind):
    """With train_on: val, test labels and every training row can change: fit, model choice and outputs do not."""
    ctx = _context(tmp_path, "val", kind)
    before = FUSERS.get(method).fit_fold(ctx, 0)
    rng = np.random.default_rng(1)
    for (split, _), block in ctx.blocks[0].items():
        if split == "val":
            continue
        order = rng.permutation(len(block))
        block.label, block.event, block.time = block.label[order], block.event[order], block.time[order]
        if block.bin_index is not None:
            block.bin_index = block.bin_index[order]
        if split == "train":  # in-sample and out-of-fold training logits: noise
            block.logits = rng.normal(size=block.logits.shape).astype(np.float32)
    after = FUSERS.get(method).fit_fold(ctx, 0)
    for key in (("val", False), ("test", False)):
        np.testing.assert_allclose(after.logits[key], before.logits[key], rtol=1e-6, atol=1e-6)
    assert after.cost.get("val_selection") == before.cost.get("val_selection")
    assert after.cost.get("chosen") == before.cost.get("chosen")


def test_val_gate_settings_are_chosen_on_held_out_validation_folds(tmp_path):
    ctx = _context(tmp_path, "val")
    cost = FUSERS.get("logitprod").fit_fold(ctx, 0).cost
    selection = cost["val_selection"]
    assert selection["folds"] == 3 and len(selection["grid"]) == 4  # 2 λ × 2 weight decays
    assert selection["chosen"]["held_out_nll"] == min(g["held_out_nll"] for g in selection["grid"])
    assert cost["epochs_run"] == selection["chosen"]["epochs"] and cost["monitor"] == "fixed_epochs"
    converged = FUSERS.get("logitprod_converged").fit_fold(ctx, 0).cost
    assert converged["val_selection"]["folds"] == 3
    assert converged["chosen"]["val_nll"] == min(g["held_out_nll"] for g in converged["grid"])


def test_inner_fold_experts_are_planned_only_for_learners_reading_oof(tmp_path):
    spec = SyntheticTask(task=TASK_OF_KIND["mutation"], n_samples=20, n_folds=2)
    base = write_synthetic_task(tmp_path, spec, with_features=False)

    def plan(fusion) -> tuple[int, str]:
        cfg = Config.from_dict({**base.raw, "fusion": fusion})
        return inner_folds_needed(cfg), Planner(cfg).expert(spec.task, "teacher0").digest

    plans = {mode: plan(_fusion(mode, [*LEARNERS, "best_val_expert"])) for mode in ("oof", "val", "in_sample")}
    assert {k: n for k, (n, _) in plans.items()} == {"oof": 5, "val": 0, "in_sample": 0}
    mixed = _fusion("val")
    mixed["stacking"]["train_on"] = "oof"  # one learner reading out-of-fold logits is enough
    assert plan(mixed)[0] == 5
    # A run whose learners all use val plans exactly the experts of a run without learners.
    no_learner = plan({"methods": ["best_val_expert", "mean_logits"]})
    assert plans["val"] == plans["in_sample"] == no_learner
    assert plans["oof"][1] != plans["val"][1]

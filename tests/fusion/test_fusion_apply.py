"""A fitted fold's kept model (``FoldOutput.model``), applied to expert logits, reproduces the fold's predictions.

External cohorts and ``pathfuse predict`` apply exactly these records: the test shows that the
JSON written by the fuse job is the model the benchmark scored, for every applicable method and
every kind (the LogitProd gate's weights come back too).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from support.synthetic import TASK_OF_KIND, SyntheticTask, fast_fusion_settings, write_synthetic_task

from pathfuse.fusion import FUSERS
from pathfuse.fusion.inputs import load_context

APPLIED = ["logitprod", "logitprod_converged", "best_val_expert", "mean_logits", "mean_probs", "stacking"]


@pytest.mark.parametrize("kind", ["wsi_classification", "mutation", "survival"])
def test_the_kept_model_reproduces_every_block(tmp_path, kind):
    task = TASK_OF_KIND[kind]
    cfg = write_synthetic_task(tmp_path, SyntheticTask(task=task, n_samples=40, n_folds=2), fast_fusion_settings(),
                               with_features=False)
    ctx = load_context(cfg, task)
    for method in APPLIED:
        declared = FUSERS.get(method)
        out = declared.fit_fold(ctx, 0)
        model = json.loads(json.dumps(out.model))  # what model.json keeps
        for key, block in ctx.blocks[0].items():
            logits, gates = declared.apply_fold(ctx.task, model, block.logits)
            np.testing.assert_allclose(logits, out.logits[key], rtol=1e-4, atol=1e-4, err_msg=f"{method} {key}")
            if out.gate_weights is not None:
                np.testing.assert_allclose(gates, out.gate_weights[key], rtol=1e-5, atol=1e-6)


def test_methods_without_a_kept_model_say_why():
    for method in ("shazam", "concat", "oracle_expert"):
        declared = FUSERS.get(method)
        assert declared.apply is None and declared.no_apply
        with pytest.raises(ValueError, match=declared.no_apply[:20]):
            declared.apply_fold  # noqa: B018

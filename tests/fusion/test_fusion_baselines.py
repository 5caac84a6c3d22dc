"""Baselines: expert choice on validation (and the test oracle), averages, stacking on OOF logits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from support.synthetic import TASK_OF_KIND, SyntheticTask, fast_fusion_settings, write_synthetic_task

from pathfuse.fusion import FUSERS
from pathfuse.fusion.inputs import load_context
from pathfuse.fusion.logitprod import expert_log_distributions
from pathfuse.heads.losses import hazards_to_event_distribution
from pathfuse.io import read_parquet, write_parquet


def _write(tmp_path, kind: str, n: int = 40, quality=(1.0, 1.0, 1.0)):
    task = TASK_OF_KIND[kind]
    cfg = write_synthetic_task(tmp_path, SyntheticTask(task=task, n_samples=n, n_folds=2, quality=quality),
                               fast_fusion_settings(), with_features=False)
    return cfg, task


def _edit(cfg, task: str, enc_index: int, rows_of, logits_of) -> None:
    """Replace the logits of one expert's selected rows."""
    path = cfg.layout.expert_predictions(task, cfg.task(task).encoders[enc_index])
    df, meta = read_parquet(path, schema="predictions")
    rows = rows_of(df)
    df.loc[rows, "logits"] = pd.Series([logits_of(r) for r in df[rows].itertuples()], index=df.index[rows])
    write_parquet(df, path, schema="predictions", meta=meta)


def test_best_expert_is_chosen_on_validation_and_the_oracle_on_test(tmp_path):
    cfg, task = _write(tmp_path, "mutation", quality=(0.0, 0.0, 0.0))
    def perfect(r):
        return np.where(np.arange(2) == r.label, 3.0, -3.0).astype(np.float32)

    def wrong(r):
        return -perfect(r)

    _edit(cfg, task, 1, lambda df: df["split"] == "val", perfect)  # expert 1: best on validation
    _edit(cfg, task, 1, lambda df: df["split"] == "test", wrong)
    _edit(cfg, task, 2, lambda df: df["split"] == "test", perfect)  # expert 2: best on test
    ctx = load_context(cfg, task)
    for fold in ctx.folds:
        best = FUSERS.get("best_val_expert").fit_fold(ctx, fold)
        oracle = FUSERS.get("oracle_expert").fit_fold(ctx, fold)
        assert best.cost["chosen_expert"] == "teacher1" and oracle.cost["chosen_expert"] == "teacher2"
        test = ctx.block(fold, "test")
        np.testing.assert_array_equal(best.logits[("test", False)], test.logits[:, 1])
    assert FUSERS.get("oracle_expert").family == "oracle"


def test_averages_for_classification_and_survival(tmp_path):
    for kind in ("wsi_classification", "survival"):
        cfg, task = _write(tmp_path / kind, kind)
        ctx = load_context(cfg, task)
        z = torch.as_tensor(ctx.block(0, "test").logits)
        fused = FUSERS.get("mean_logits").fit_fold(ctx, 0).logits[("test", False)]
        np.testing.assert_allclose(fused, z.mean(1).numpy(), rtol=1e-6)
        fused = torch.as_tensor(FUSERS.get("mean_probs").fit_fold(ctx, 0).logits[("test", False)])
        want = expert_log_distributions(z, kind == "survival").exp().mean(1)
        got = hazards_to_event_distribution(fused) if kind == "survival" else torch.softmax(fused, -1)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(got.sum(-1), torch.ones(len(got)))


def test_stacking_fits_on_out_of_fold_logits(tmp_path):
    for kind in ("mutation", "survival"):
        outputs = {}
        for variant, rows_of in [("clean", None), ("in_sample", lambda df: (df["split"] == "train") & ~df["oof"]),
                                 ("oof", lambda df: (df["split"] == "train") & df["oof"])]:
            cfg, task = _write(tmp_path / kind / variant, kind)
            if rows_of is not None:
                noise = np.random.default_rng(0)
                for m in range(3):
                    _edit(cfg, task, m, rows_of, lambda r, rng=noise: rng.normal(size=len(r.logits)).astype(np.float32))
            outputs[variant] = FUSERS.get("stacking").fit_fold(load_context(cfg, task), 0).logits[("test", False)]
        np.testing.assert_array_equal(outputs["clean"], outputs["in_sample"])
        assert not np.allclose(outputs["clean"], outputs["oof"])
        assert np.isfinite(outputs["clean"]).all()

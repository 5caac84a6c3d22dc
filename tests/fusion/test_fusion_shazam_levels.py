"""shazam_levels: the structure docs/methods.md describes, validation-only model choice, tile tasks only."""

from __future__ import annotations

import pytest
import torch
from support.synthetic import TASK_OF_KIND, SyntheticTask, fast_fusion_settings, write_synthetic_task
from torch import nn

from pathfuse.evaluation import metrics
from pathfuse.fusion import FUSERS, applicable_methods
from pathfuse.fusion.features import FeatureError
from pathfuse.fusion.run import fuse_task
from pathfuse.fusion.shazam import AttentionBlock, projection
from pathfuse.fusion.shazam_levels import LevelsLoss, ShazamLevels
from pathfuse.io import read_parquet
from pathfuse.kinds import get_kind

SETTINGS = {"dim": 16, "layers_per_level": 2, "gate_hidden": 8, "max_epochs": 3, "patience": 2}


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_count_and_shapes_match_the_documented_structure():
    dims, d, k, h, c = [8, 12, 20], 16, 4, 32, 3
    model = ShazamLevels(dims, n_outputs=c, dim=d, layers_per_level=k, gate_hidden=h, target_dims=dims)
    n = len(dims)
    proj = sum(_n_params(projection(x, d)) for x in dims)  # per teacher: Linear–LN–ReLU–Linear–LN–ReLU
    gate = (n * d * h + h) + 2 * h + (h * n + n)  # Linear(N·D→H), LayerNorm(H), Linear(H→N)
    block = _n_params(AttentionBlock(d))  # Q, K, V, O = Linear(D, D) and one LayerNorm
    classifier = (d * d + d) + 2 * d + (d * c + c)
    targets = sum(x * d + d for x in dims)  # T_iℓ = Linear(D_i → D)
    assert block == 4 * (d * d + d) + 2 * d
    assert _n_params(model) == 3 * (proj + gate + k * block + targets) + classifier
    assert [len(s) for s in model.segments] == [k, k, k]
    gate_layers = [type(m).__name__ for m in model.gates[0].mlp]
    assert gate_layers == ["Linear", "LayerNorm", "GELU", "Dropout", "Linear"]
    x = [torch.randn(5, dims[i % n]) for i in range(3 * n)]  # level-major: low ×N, mid ×N, high ×N
    model.eval()
    assert model(x).shape == (5, c)
    assert model(x, target_inputs=x).shape == (5, c + 3 * d + 3 * n * d)
    gated = model(x, with_gates=True)
    assert gated.shape == (5, c + 3 * n)
    torch.testing.assert_close(gated[:, c:].reshape(5, 3, n).sum(-1), torch.ones(5, 3))


def test_levels_are_joined_low_to_mid_to_high_by_residuals():
    """Changing only the low level's inputs changes the output (its segment feeds mid and high)."""
    torch.manual_seed(0)
    model = ShazamLevels([6, 10], n_outputs=2, dim=8, layers_per_level=1, gate_hidden=4).eval()
    x = [torch.randn(3, d) for d in (6, 10, 6, 10, 6, 10)]
    moved = [x[0] + 5.0, *x[1:]]
    assert not torch.allclose(model(x), model(moved))
    summaries, _ = model.levels(x)
    moved_summaries, _ = model.levels([*x[:4], x[4] + 5.0, x[5]])  # only the high level's inputs
    torch.testing.assert_close(summaries[0], moved_summaries[0])
    torch.testing.assert_close(summaries[1], moved_summaries[1])


def test_distillation_is_applied_per_level():
    loss_fn = LevelsLoss(2, 2, 4, get_kind("wsi_classification"), alpha=0.4, weight=0.2, delta=1.0)
    logits, low, mid, high = torch.randn(3, 2), torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4)
    batch = {"label": torch.tensor([0, 1, 0])}
    matched = loss_fn(torch.cat([logits, low, mid, high, low, low, mid, mid, high, high], 1), batch)
    torch.testing.assert_close(matched, loss_fn(logits, batch))
    off = loss_fn(torch.cat([logits, low, mid, high, low, low, -mid, mid, high, high], 1), batch)
    assert off > matched + 0.05


def _levels_task(tmp_path, **spec):
    task = TASK_OF_KIND["tile_classification"]
    fusion = {**fast_fusion_settings(), "methods": ["shazam_levels"], "shazam_levels": SETTINGS}
    cfg = write_synthetic_task(tmp_path, SyntheticTask(task=task, n_samples=60, n_folds=2, **spec), fusion)
    return cfg, task


def test_model_choice_reads_only_the_validation_split(tmp_path, monkeypatch):
    """Every metric computed while training scores validation rows of the fold; the test split is never read."""
    cfg, task = _levels_task(tmp_path, levels=True)
    scored = []
    real_score = metrics.score

    def spy(task_spec, rows, *args, **kwargs):
        scored.append(set(rows["split"]))
        return real_score(task_spec, rows, *args, **kwargs)

    monkeypatch.setattr("pathfuse.fusion.fitting.score", spy)
    paths = fuse_task(cfg, task)
    assert scored and all(splits == {"val"} for splits in scored)
    df, meta = read_parquet(paths[0], schema="predictions")
    assert set(df["split"]) >= {"train", "val", "test"}
    assert meta["folds"]["0"]["monitor"] == "0.5*bal_acc+0.5*w_f1"
    weights = df["gate_weights"].dropna()
    assert len(weights) == len(df) and len(weights.iloc[0]) == 3 * 3  # 3 levels × 3 teachers


def test_features_without_levels_name_the_setting(tmp_path):
    cfg, task = _levels_task(tmp_path)
    with pytest.raises(FeatureError, match=r"embedding\.levels: tiles"):
        fuse_task(cfg, task)


def test_slide_tasks_are_not_applicable_with_a_reason():
    assert applicable_methods(["shazam", "shazam_levels"], is_slide_task=True) == ["shazam"]
    assert applicable_methods(["shazam", "shazam_levels"], is_slide_task=False) == ["shazam", "shazam_levels"]
    assert "tile tasks only" in FUSERS.get("shazam_levels").not_applicable(True)

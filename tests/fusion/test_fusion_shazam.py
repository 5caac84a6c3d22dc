"""Shazam: the architecture of METHODS.md §4, masked bag pooling, explicit distillation targets."""

from __future__ import annotations

import pytest
import torch
from support.synthetic import TASK_OF_KIND, SyntheticTask, fast_fusion_settings, write_synthetic_task
from torch import nn

from pathfuse.fusion.run import fuse_task
from pathfuse.fusion.shazam import AttentionBlock, Shazam, ShazamLoss
from pathfuse.io import read_parquet
from pathfuse.kinds import get_kind


def test_architecture_matches_the_paper():
    model = Shazam([8, 12, 20], n_outputs=3, dim=16, n_layers=5, target_dims=[8, 12, 20])
    assert len(model.blocks) == 5
    for block in model.blocks:  # single head: Q, K, V, O = Linear(D, D); post-norm; no FFN, no dropout
        linears = [m for m in block.modules() if isinstance(m, nn.Linear)]
        assert len(linears) == 4 and all(m.in_features == m.out_features == 16 for m in linears)
        assert not any(isinstance(m, nn.Dropout) for m in block.modules())
    kinds = [type(m).__name__ for m in model.projections[0]]
    assert kinds == ["Linear", "LayerNorm", "ReLU", "Linear", "LayerNorm", "ReLU"]
    assert [type(m).__name__ for m in model.classifier] == ["Linear", "ReLU", "LayerNorm", "Linear"]
    x = [torch.randn(5, d) for d in (8, 12, 20)]
    assert model(x).shape == (5, 3)
    assert model(x, target_inputs=x).shape == (5, 3 + 16 + 3 * 16)


def test_attention_block_is_post_norm_residual():
    block = AttentionBlock(4)
    tokens = torch.randn(2, 3, 4)
    with torch.no_grad():
        scores = block.query(tokens) @ block.key(tokens).transpose(1, 2) / 2.0
        expected = block.norm(tokens + block.out(torch.softmax(scores, -1) @ block.value(tokens)))
    torch.testing.assert_close(block(tokens), expected)


def test_slide_bags_are_pooled_per_teacher_with_padding_masked():
    torch.manual_seed(0)
    model = Shazam([6, 10], n_outputs=2, dim=8, n_layers=2, pool_hidden=12).eval()
    bags = [torch.randn(1, 4, 6), torch.randn(1, 4, 10)]
    alone = model(bags, [torch.ones(1, 4, dtype=torch.bool)] * 2)
    padded = [torch.cat([b, torch.randn(1, 3, b.shape[-1]) * 100], 1) for b in bags]
    mask = torch.tensor([[True] * 4 + [False] * 3])
    torch.testing.assert_close(model(padded, [mask, mask]), alone)


@pytest.mark.parametrize("trainable", [True, False])
def test_distillation_targets_are_trained_only_when_configured(trainable):
    torch.manual_seed(0)
    model = Shazam([6, 10], n_outputs=3, dim=8, n_layers=1, target_dims=[6, 10], train_targets=trainable)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss_fn = ShazamLoss(3, 8, get_kind("wsi_classification"), alpha=0.4, weight=0.5, delta=1.0)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x = [torch.randn(16, 6), torch.randn(16, 10)]
    for _ in range(3):
        opt.zero_grad()
        loss_fn(model(x, target_inputs=x), {"label": torch.randint(0, 3, (16,))}).backward()
        opt.step()
    after = model.state_dict()
    assert not torch.equal(before["classifier.0.weight"], after["classifier.0.weight"])
    assert torch.equal(before["targets.0.weight"], after["targets.0.weight"]) is not trainable


def test_distillation_term_vanishes_when_the_student_matches_every_target():
    loss_fn = ShazamLoss(2, 4, get_kind("wsi_classification"), alpha=0.4, weight=0.5, delta=1.0)
    logits, fused = torch.randn(3, 2), torch.randn(3, 4)
    batch = {"label": torch.tensor([0, 1, 0])}
    matched = loss_fn(torch.cat([logits, fused, fused, fused], 1), batch)
    task_only = loss_fn(logits, batch)
    torch.testing.assert_close(matched, task_only)
    assert loss_fn(torch.cat([logits, fused, -fused, fused], 1), batch) > task_only + 0.5


def test_sum_and_moe_ablations_replace_only_the_token_mixer():
    torch.manual_seed(0)
    x = [torch.randn(5, 6), torch.randn(5, 10), torch.randn(5, 4)]
    summed = Shazam([6, 10, 4], n_outputs=2, dim=8, n_layers=5, mixer="sum").eval()
    assert len(summed.blocks) == 0 and summed.gate is None
    tokens = torch.stack([proj(t) for proj, t in zip(summed.projections, x, strict=True)], dim=1)
    torch.testing.assert_close(summed.fuse(x), tokens.sum(dim=1))

    moe = Shazam([6, 10, 4], n_outputs=2, dim=8, n_layers=5, mixer="moe").eval()
    assert len(moe.blocks) == 0 and moe.gate.in_features == 3 * 8 and moe.gate.out_features == 3
    tokens = torch.stack([proj(t) for proj, t in zip(moe.projections, x, strict=True)], dim=1)
    weights = moe.teacher_weights(tokens)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(5))
    assert not torch.allclose(weights[0], weights[1])  # sample-adaptive
    torch.testing.assert_close(moe.fuse(x), (weights.unsqueeze(-1) * tokens).sum(dim=1))
    with pytest.raises(ValueError, match="unknown Shazam mixer 'mamba'"):
        Shazam([6], n_outputs=2, mixer="mamba")


def test_ablations_run_as_fusion_methods_with_the_shazam_settings(tmp_path):
    task = TASK_OF_KIND["wsi_classification"]
    settings = {**fast_fusion_settings(), "methods": ["shazam_sum", "shazam_moe"]}
    cfg = write_synthetic_task(tmp_path, SyntheticTask(task=task, n_samples=24, n_folds=1, tiles_per_slide=4), settings)
    fusion = cfg.section("fusion")
    for path, mixer in zip(fuse_task(cfg, task), ("sum", "moe"), strict=True):
        df, meta = read_parquet(path, schema="predictions")
        assert meta["family"] == "fuser" and meta["folds"]["0"]["mixer"] == mixer
        assert len(df) and df["gate_weights"].isna().all()
        assert meta["settings"]["shazam"] == fusion["shazam"]  # the ablations read the shazam block

"""pathfuse.optimizers must train exactly as torch.optim does (bit for bit), minus the dynamo import."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from pathfuse.optimizers import Adam, CosineRestarts


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(7, 16), nn.GELU(), nn.Linear(16, 3), nn.Linear(3, 3))


def _train(model: nn.Module, opt, sched, steps: int, frozen_last: bool) -> list[float]:
    """Steps on fixed random batches; the last layer gets no gradient on odd steps (skipped)."""
    gen = torch.Generator().manual_seed(0)
    lrs = []
    for step in range(steps):
        x = torch.randn(9, 7, generator=gen)
        hidden = model[2](model[1](model[0](x)))
        out = hidden if frozen_last and step % 2 else model[3](hidden)
        opt.zero_grad()
        out.square().mean().backward()
        opt.step()
        if step % 3 == 2:  # a few steps per "epoch"
            sched.step()
        lrs.append(opt.lr if isinstance(opt, Adam) else opt.param_groups[0]["lr"])
    return lrs


@pytest.mark.parametrize("decoupled", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_updates_are_bit_identical_to_torch(decoupled, weight_decay):
    ours, theirs = _model(1), _model(1)
    torch_cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    reference = torch_cls(theirs.parameters(), lr=3e-3, weight_decay=weight_decay, foreach=False)
    reference_sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(reference, T_0=2, T_mult=2)
    opt = Adam(ours.parameters(), lr=3e-3, weight_decay=weight_decay, decoupled=decoupled)
    sched = CosineRestarts(opt, t0=2, t_mult=2)
    lrs = _train(ours, opt, sched, 60, frozen_last=True)
    reference_lrs = _train(theirs, reference, reference_sched, 60, frozen_last=True)
    assert lrs == reference_lrs
    for mine, ref in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(mine, ref)
    assert not torch.equal(ours[0].weight, _model(1)[0].weight)  # it did train


def test_training_does_not_import_dynamo():
    """The reason the module exists: a fit in a fresh process leaves torch._dynamo unimported."""
    code = (
        "import sys, torch\n"
        "from pathfuse.optimizers import Adam, CosineRestarts\n"
        "m = torch.nn.Linear(3, 2); opt = Adam(m.parameters(), lr=0.1, weight_decay=0.1)\n"
        "s = CosineRestarts(opt, 2, 2)\n"
        "m(torch.randn(4, 3)).sum().backward(); opt.step(); s.step()\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_bad_schedule_is_refused():
    with pytest.raises(ValueError, match="t0 > 0"):
        CosineRestarts(Adam([nn.Parameter(torch.zeros(1))], lr=0.1), t0=0, t_mult=2)

"""The head bank: one head trains bit for bit as today's loop; many heads stay separate."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import Dataset

from pathfuse.data.bags import collate_bags
from pathfuse.data.tiles import collate_tiles
from pathfuse.heads import build_head
from pathfuse.heads.bank import BankHead, BankRecipe, train_bank
from pathfuse.heads.objectives import Objective, monitor_fn
from pathfuse.training import fit, make_loader

pytestmark = pytest.mark.usefixtures("one_thread")


class Items(Dataset):
    """Bags (or tile rows) with optional targets, read as the expert job's datasets are."""

    def __init__(self, features: list[torch.Tensor], targets: dict[str, np.ndarray], rows: list[int]) -> None:
        self.features, self.targets, self.rows = features, targets, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        r = self.rows[i]
        return {"features": self.features[r], "index": i, **{k: v[r] for k, v in self.targets.items()}}


def _cohort(n: int, dim: int, tiles: bool, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    labels = np.arange(n) % 3 if tiles else np.arange(n) % 2
    if tiles:
        features = [torch.randn(dim, generator=gen) + float(y) for y in labels]
    else:
        features = []
        for y in labels:
            bag = torch.randn(int(torch.randint(3, 12, (1,), generator=gen)), dim, generator=gen)
            bag[0] += float(y)
            features.append(bag)
    times = np.linspace(1, 30, n)[np.random.default_rng(seed).permutation(n)]
    events = (np.arange(n) % 3 != 0).astype(np.int64)
    return features, labels, times, events


CASES = {
    "abmil": ("abmil", "wsi_classification", "auroc", False),
    "abmil_survival": ("abmil_survival", "survival", "c_index", False),
    "mlp": ("mlp", "tile_classification", "loss", True),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_head_trains_bit_identically_to_the_loop(case):
    head, kind, monitor, tiles = CASES[case]
    features, labels, times, events = _cohort(40, 12, tiles)
    samples = pd.DataFrame({"label": labels, "time": times, "event": events})
    edges = np.array([0.0, 8.0, 16.0, 24.0, 31.0]) if kind == "survival" else None
    objective = Objective(kind, edges)
    targets = objective.targets(samples)
    n_out = 4 if kind == "survival" else (3 if tiles else 2)
    collate = collate_tiles if tiles else collate_bags
    train, val = list(range(3, 33)), list(range(33, 40))
    recipe = {"epochs": 4, "lr": 5e-3, "weight_decay": 1e-4, "batch_size": 7, "patience": None}
    seed = 11
    loss_fn = objective.loss()
    metric = None if monitor == "loss" else monitor_fn(monitor, kind)

    def build():
        torch.manual_seed(seed)
        return build_head(head, 12, n_out) if tiles else _dropout_head(head, n_out)

    model = build()
    train_loader = make_loader(Items(features, targets, train), 7, shuffle=True, seed=seed + 2, collate_fn=collate)
    result = fit(model, train_loader,
                 make_loader(Items(features, targets, val), 7, shuffle=False, collate_fn=collate), loss_fn,
                 epochs=4, lr=5e-3, weight_decay=1e-4, monitor=monitor, mode="min" if monitor == "loss" else "max",
                 seed=seed, metric_fn=metric)
    banked = build()
    everything = list(range(40))
    [bank_result] = train_bank(
        [BankHead("h", banked, train, val, targets, loss_fn, metric)],
        (Items(features, {}, everything), Items(features, {}, everything)), collate,
        BankRecipe(**recipe, monitor=monitor, mode="min" if monitor == "loss" else "max"), seed=seed)
    assert bank_result.best_epoch == result.best_epoch and bank_result.best_value == result.best_value
    a, b = bank_result.curve.drop(columns="seconds"), result.curve.drop(columns="seconds")
    assert a.columns.tolist() == b.columns.tolist() and (a.to_numpy() == b.to_numpy()).all(), (a - b)
    for name, value in model.state_dict().items():
        assert torch.equal(value, banked.state_dict()[name]), name
    batch = collate([Items(features, {}, everything)[i] for i in range(40)])
    with torch.no_grad():
        assert torch.equal(model.eval()(**batch["inputs"]), banked.eval()(**batch["inputs"]))


def _dropout_head(head: str, n_out: int) -> torch.nn.Module:
    from pathfuse.heads.abmil import ABMIL

    return ABMIL(12, n_out, hidden=32, attn_dim=8, dropout=0.25)


def test_heads_learn_only_from_their_own_samples_and_stop_on_their_own(caplog):
    """A head's weights depend on its own samples only: poisoning another head's samples changes nothing."""
    features, labels, _, _ = _cohort(60, 12, tiles=True)
    objective = Objective("tile_classification")
    collate = collate_tiles

    def run(poison: bool) -> list[torch.nn.Module]:
        feats = [f.clone() for f in features]
        if poison:
            for i in range(40, 50):
                feats[i] = feats[i] * 100.0  # only head 1 trains on these
        targets = objective.targets(pd.DataFrame({"label": labels}))
        heads = []
        for h, train in enumerate([list(range(0, 40)), list(range(10, 50))]):
            torch.manual_seed(h)
            heads.append(BankHead(f"h{h}", build_head("mlp", 12, 3), train, list(range(50, 60)), targets,
                                  objective.loss(), None))
        everything = list(range(60))
        train_bank(heads, (Items(feats, {}, everything), Items(feats, {}, everything)), collate,
                   BankRecipe(epochs=3, lr=1e-2, weight_decay=0.0, batch_size=8, patience=None, monitor="loss",
                              mode="min"), seed=0)
        return [h.model for h in heads]

    with caplog.at_level(logging.INFO, logger="pathfuse.heads.bank"):
        clean = run(False)
    poisoned = run(True)
    # head 0 never sees samples 40-49; it still shares batches (and their order) with head 1
    assert all(torch.equal(a, b) for a, b in zip(clean[0].state_dict().values(),
                                                 poisoned[0].state_dict().values(), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(clean[1].state_dict().values(),
                                                        poisoned[1].state_dict().values(), strict=True))
    assert "head bank epoch 3/3: 2 of 2 heads training" in caplog.text


def test_a_stopped_head_keeps_its_weights_while_the_others_train():
    features, labels, _, _ = _cohort(40, 12, tiles=True)
    objective = Objective("tile_classification")
    targets = objective.targets(pd.DataFrame({"label": labels}))
    heads = []
    for h in range(2):
        torch.manual_seed(h)
        heads.append(BankHead(f"h{h}", build_head("mlp", 12, 3), list(range(30)), list(range(30, 40)), targets,
                              objective.loss(), None))
    heads[0].val = list(range(0, 10))  # validates on its training samples: keeps improving
    everything = list(range(40))
    results = train_bank(heads, (Items(features, {}, everything), Items(features, {}, everything)), collate_tiles,
                         BankRecipe(epochs=12, lr=3e-2, weight_decay=0.0, batch_size=8, patience=0,
                                    monitor="loss", mode="min"), seed=0)
    lengths = [len(r.curve) for r in results]
    assert lengths[1] < lengths[0]  # the second head stopped early; the first went on
    assert results[1].best_epoch == lengths[1] - 2  # patience 0: one epoch without improvement


class _Tiny(torch.nn.Module):
    """A head of a class the bank has no stacked form for."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(12, 3)

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.lin(features).relu()


def test_a_head_without_a_stacked_form_trains_head_by_head_as_alone():
    features, labels, _, _ = _cohort(30, 12, tiles=True)
    objective = Objective("tile_classification")
    targets = objective.targets(pd.DataFrame({"label": labels}))
    train, val = list(range(20)), list(range(20, 30))
    torch.manual_seed(3)
    alone = _Tiny()
    fit(alone, make_loader(Items(features, targets, train), 8, shuffle=True, seed=5, collate_fn=collate_tiles),
        make_loader(Items(features, targets, val), 8, shuffle=False, collate_fn=collate_tiles), objective.loss(),
        epochs=3, lr=1e-2, seed=3)
    torch.manual_seed(3)
    banked = _Tiny()
    everything = list(range(30))
    train_bank([BankHead("tiny", banked, train, val, targets, objective.loss(), None)],
               (Items(features, {}, everything), Items(features, {}, everything)), collate_tiles,
               BankRecipe(epochs=3, lr=1e-2, weight_decay=0.0, batch_size=8, patience=None, monitor="loss",
                          mode="min"), seed=3)
    assert all(torch.equal(a, b) for a, b in zip(alone.state_dict().values(), banked.state_dict().values(),
                                                 strict=True))


def test_a_bank_does_not_import_dynamo():
    """Expert jobs are short processes: the bank keeps torch.optim's ~1.8 s torch._dynamo import away."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np, torch\n"
        "from pathfuse.data.tiles import collate_tiles\n"
        "from pathfuse.heads import build_head\n"
        "from pathfuse.heads.bank import BankHead, BankRecipe, train_bank\n"
        "from pathfuse.heads.objectives import Objective\n"
        "class D(torch.utils.data.Dataset):\n"
        "    def __len__(self): return 20\n"
        "    def __getitem__(self, i): return {'features': torch.randn(6), 'index': i}\n"
        "o = Objective('tile_classification'); t = {'label': np.arange(20) % 3}\n"
        "heads = [BankHead(str(h), build_head('mlp', 6, 3), list(range(h, 15)), list(range(15, 20)), t, o.loss(),"
        " None) for h in range(2)]\n"
        "train_bank(heads, (D(), D()), collate_tiles, BankRecipe(epochs=2, lr=1e-2, weight_decay=0.0, batch_size=4,"
        " patience=None, monitor='loss', mode='min'), seed=0)\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"

"""Expert heads: masking of padded tiles, the registry, and learning separable problems."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lifelines.utils import concordance_index
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from support.synthetic_experts import classification_cohort, feature_paths, survival_cohort

from pathfuse.config import section_settings
from pathfuse.data.bags import BagDataset, BagStore, collate_bags
from pathfuse.data.tiles import TileDataset, collate_tiles
from pathfuse.heads import HEADS, build_head
from pathfuse.heads.losses import assign_bins, cross_entropy, survival_nll, survival_risk, time_bins
from pathfuse.settings import ExpertsSettings
from pathfuse.training import fit, make_loader, predict

pytestmark = pytest.mark.usefixtures("one_thread")


def test_registry_lists_the_heads_and_rejects_unknown_names():
    assert {"abmil", "abmil_survival", "mlp"} <= set(HEADS.names())
    with pytest.raises(KeyError, match="known: abmil"):
        build_head("transformer", 8, 2)


def test_padding_mask_makes_a_bag_independent_of_its_batch():
    torch.manual_seed(0)
    recipe = section_settings(ExpertsSettings, heads={"wsi_classification": {"dropout": 0.0}}).heads.wsi_classification
    model = build_head("abmil", 6, 3, recipe).eval()
    short, long = torch.randn(4, 6), torch.randn(9, 6)
    batch = collate_bags([{"features": short, "index": 0}, {"features": long, "index": 1}])
    with torch.no_grad():
        alone = model(short.unsqueeze(0))
        padded = model(**batch["inputs"])
        unmasked = model(batch["inputs"]["features"])
        _, attention = model.pool(**batch["inputs"])
    assert torch.allclose(padded[0], alone[0], atol=1e-6)
    assert not torch.allclose(unmasked[0], alone[0], atol=1e-4)  # the anchor's zero padding
    assert attention[0, 4:].abs().max() == 0 and torch.allclose(attention.sum(1), torch.ones(2))
    with pytest.raises(ValueError, match="no tiles"):
        model(torch.randn(1, 3, 6), torch.zeros(1, 3, dtype=torch.bool))


def test_abmil_embedding_is_512_wide_and_consistent_with_the_logits():
    model = build_head("abmil_survival", 6, 4).eval()
    x = torch.randn(2, 5, 6)
    logits, emb = model.logits_and_embedding(x)
    assert logits.shape == (2, 4) and emb.shape == (2, 512)
    assert torch.allclose(model.classifier(emb), logits)
    assert model.flops(10) > model.flops(5) > 0


def _split(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    idx = np.random.default_rng(0).permutation(n)
    return idx[: n // 2], idx[n // 2 : n * 2 // 3], idx[n * 2 // 3 :]


def test_abmil_learns_a_separable_bag_problem(tmp_path):
    table = classification_cohort(tmp_path, n_patients=60)
    store = BagStore(feature_paths(tmp_path, list(table["slide_id"])))
    y = table["label"].map({"neg": 0, "pos": 1}).to_numpy()
    slides = [[s] for s in table["slide_id"]]
    train, val, test = _split(len(table))

    def loader(idx, shuffle):
        data = BagDataset(store, [slides[i] for i in idx], {"label": y[idx]})
        return make_loader(data, 8, shuffle=shuffle, seed=1, collate_fn=collate_bags)

    torch.manual_seed(0)
    model = build_head("abmil", 16, 2)
    fit(
        model,
        loader(train, True),
        loader(val, False),
        lambda out, b: cross_entropy(out, b["label"]),
        epochs=12,
        lr=2e-3,
        seed=0,
    )
    logits, targets = predict(model, loader(test, False))
    assert roc_auc_score(targets["label"].numpy(), torch.softmax(logits, 1)[:, 1].numpy()) > 0.9


def test_survival_abmil_learns_to_rank_risk(tmp_path):
    table = survival_cohort(tmp_path, n_patients=90)
    store = BagStore(feature_paths(tmp_path, list(table["slide_id"])))
    times, events = table["survival_months"].to_numpy(), 1 - table["censorship"].to_numpy()
    train, val, test = _split(len(table))
    edges = time_bins(times[train], events[train], 4)
    bins = assign_bins(times, edges)

    def loader(idx, shuffle):
        data = BagDataset(
            store, [[table["slide_id"][i]] for i in idx], {"bin": bins[idx], "event": events[idx]}
        )
        return make_loader(data, 8, shuffle=shuffle, seed=1, collate_fn=collate_bags)

    torch.manual_seed(0)
    model = build_head("abmil_survival", 16, 4)
    fit(
        model,
        loader(train, True),
        loader(val, False),
        lambda out, b: survival_nll(out, b["bin"], b["event"]),
        epochs=15,
        lr=2e-3,
        seed=0,
    )
    logits, _ = predict(model, loader(test, False))
    c_index = concordance_index(times[test], -survival_risk(logits).numpy(), events[test])
    assert c_index > 0.7  # chance is 0.5; seeds 0-4 give 0.77-0.84


def test_mlp_probe_learns_separable_tiles():
    rng = np.random.default_rng(0)
    y = np.arange(300) % 3
    features = torch.from_numpy(rng.normal(size=(300, 10)) + 2.5 * np.eye(10)[y]).half()
    train, val, test = _split(300)

    def loader(idx, shuffle):
        return make_loader(
            TileDataset(features, idx, {"label": y[idx]}),
            32,
            shuffle=shuffle,
            seed=1,
            collate_fn=collate_tiles,
        )

    torch.manual_seed(0)
    model = build_head("mlp", 10, 3)
    fit(
        model,
        loader(train, True),
        loader(val, False),
        lambda out, b: cross_entropy(out, b["label"]),
        epochs=15,
        lr=3e-3,
        seed=0,
    )
    logits, targets = predict(model, loader(test, False))
    assert balanced_accuracy_score(targets["label"].numpy(), logits.argmax(1).numpy()) > 0.9

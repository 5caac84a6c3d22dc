"""The expert stage end to end on synthetic features: contract, honesty, determinism, errors."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file
from support.synthetic_experts import (
    ENCODER,
    classification_cohort,
    make_config,
    survival_cohort,
    tile_dataset,
    write_split_files,
)

from pathfuse.data.splits import SplitError
from pathfuse.evaluation.metrics import score
from pathfuse.experts import fold as expert_fold
from pathfuse.experts.fold import FoldError, plan_fold, train_folds
from pathfuse.experts.job import Job
from pathfuse.experts.resume import fold_fingerprint
from pathfuse.experts.run import train_experts
from pathfuse.heads import build_head
from pathfuse.io import read_parquet

pytestmark = pytest.mark.usefixtures("one_thread")

COLUMNS = [
    "fold",
    "split",
    "oof",
    "sample_id",
    "patient_id",
    "label",
    "time",
    "event",
    "logits",
    "embedding",
    "gate_weights",
]


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory):
    """One binary-task run shared by the tests below, with spies on which model saw what."""
    root = tmp_path_factory.mktemp("binary")
    classification_cohort(root, n_patients=30).to_csv(root / "labels_bin.csv", index=False)
    cfg = make_config(root, ["tbin"])
    trained_on: dict[int, set[str]] = {}
    predicted: list[tuple[int, bool, set[str]]] = []
    alive: list[torch.nn.Module] = []  # keeps every model alive so that no two share an id()
    real_bank, real_predict = expert_fold.train_bank, expert_fold.predict_rows

    def spy_bank(heads, data, *args, **kwargs):
        for head in heads:
            alive.append(head.model)
            trained_on[id(head.model)] = {s for p in head.train for s in data[0].slide_ids[p]}
        return real_bank(heads, data, *args, **kwargs)

    def spy_predict(job, model, df, objective, fold, split, oof):
        predicted.append((id(model), oof, set(df["sample_id"])))
        return real_predict(job, model, df, objective, fold, split, oof)

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(expert_fold, "train_bank", spy_bank)
        mp.setattr(expert_fold, "predict_rows", spy_predict)
        path = train_experts(cfg, "tbin", ENCODER)
    torch.set_num_threads(before)
    return cfg, path, trained_on, predicted


def test_predictions_weights_and_curve_follow_the_contract(binary_run):
    cfg, path, _, _ = binary_run
    assert path == cfg.layout.expert_predictions("tbin", ENCODER)
    schema = pq.read_schema(path)
    assert schema.names == COLUMNS
    assert schema.field("fold").type == pa.int32() and schema.field("event").type == pa.int8()
    assert schema.field("logits").type == pa.list_(pa.float32())
    df, meta = read_parquet(path, schema="predictions")
    assert {
        "task",
        "kind",
        "method",
        "family",
        "encoders",
        "classes",
        "n_bins",
        "bin_edges",
        "folds",
        "dropped",
        "seed",
    } <= set(meta)
    assert meta["family"] == "expert" and meta["classes"] == ["neg", "pos"] and meta["encoders"] == [ENCODER]
    assert set(meta["folds"]) == {"0", "1", "2"}
    info = meta["folds"]["0"]
    assert {
        "train_seconds",
        "params",
        "flops",
        "best_epoch",
        "carve_val",
        "n_train",
        "n_val",
        "n_test",
    } <= set(info)
    tests = df[df["split"] == "test"]
    assert (
        sorted(tests["sample_id"]) == sorted(set(df["sample_id"]))
        and not tests["sample_id"].duplicated().any()
    )
    for fold, part in df.groupby("fold"):
        in_sample = set(part.loc[(part["split"] == "train") & ~part["oof"], "sample_id"])
        oof = part.loc[part["oof"], "sample_id"]
        assert set(oof) == in_sample and not oof.duplicated().any()
        assert len(in_sample) == meta["folds"][str(fold)]["n_train"]
        assert (part.loc[part["oof"], "split"] == "train").all()
    assert all(len(v) == 2 for v in df["logits"]) and all(len(v) == 512 for v in df["embedding"])
    assert df["gate_weights"].isna().all()
    assert (
        score(cfg.task("tbin"), tests)["auroc"] > 0.75
        and score(cfg.task("tbin"), df[df["oof"]])["auroc"] > 0.75
    )
    out_dir = cfg.layout.expert_dir("tbin", ENCODER)
    build_head("abmil", 16, 2).load_state_dict(load_file(out_dir / "fold1.safetensors"))
    curve, _ = read_parquet(out_dir / "training_curve.parquet", schema="training_curve")
    assert set(curve["model"]) == {"outer", "inner0", "inner1", "inner2"} and set(curve["fold"]) == {0, 1, 2}
    assert not list(out_dir.glob(".fold*"))  # partial files are gone once the output exists


def test_attention_is_recorded_for_every_test_tile_of_every_fold(binary_run):
    from pathfuse.attention import read_attention

    cfg, path, _, _ = binary_run
    preds, _ = read_parquet(path, schema="predictions")
    tests = preds[preds["split"] == "test"]
    attention = read_attention(cfg.layout.expert_attention("tbin", ENCODER))
    attended = set(zip(attention["fold"], attention["sample_id"], strict=True))
    assert attended == set(zip(tests["fold"], tests["sample_id"], strict=True))
    sums = attention.groupby(["fold", "sample_id"])["attention"].sum()
    assert np.allclose(sums, 1.0, atol=1e-4)  # the softmax the prediction pooled with, no padding
    assert (attention.groupby(["fold", "sample_id"])["tile"].min() == 0).all()
    assert (attention["x"] == 0).all() and (attention["y"] == 0).all()  # the feature files' coords


def test_out_of_fold_predictions_come_from_models_that_never_trained_on_them(binary_run):
    _, _, trained_on, predicted = binary_run
    oof_calls = [(model, ids) for model, oof, ids in predicted if oof]
    assert len(oof_calls) == 9  # 3 outer folds x 3 inner folds
    for model, ids in oof_calls:
        assert ids and not ids & trained_on[model]
    in_sample = [(model, ids) for model, oof, ids in predicted if not oof and ids <= trained_on[model]]
    assert len(in_sample) == 3  # the outer model's train rows: the only predictions of seen samples


def test_runs_are_deterministic_and_a_killed_job_resumes_its_finished_folds(tmp_path, binary_run, caplog):
    _, first, _, _ = binary_run
    classification_cohort(tmp_path, n_patients=30).to_csv(tmp_path / "labels_bin.csv", index=False)
    cfg = make_config(tmp_path, ["tbin"])
    again = train_experts(cfg, "tbin", ENCODER)
    a, b = read_parquet(first, "predictions")[0], read_parquet(again, "predictions")[0]
    assert np.array_equal(np.stack(a["logits"]), np.stack(b["logits"]))
    assert a[["fold", "split", "oof", "sample_id"]].equals(b[["fold", "split", "oof", "sample_id"]])
    again.unlink()
    job = Job.create(cfg, "tbin", ENCODER)
    fold0 = job.folds[0]
    [done] = train_folds(job, [plan_fold(job, fold0, fold_fingerprint(job, fold0))])  # then killed
    with caplog.at_level(logging.INFO, logger="pathfuse.experts"):
        resumed = read_parquet(train_experts(cfg, "tbin", ENCODER), "predictions")[0]
    assert "fold 0: finished earlier" in caplog.text and "fold 1: finished earlier" not in caplog.text
    kept = resumed[resumed["fold"] == 0].reset_index(drop=True)
    assert np.array_equal(np.stack(kept["logits"]), np.stack(done.rows["logits"]))
    assert set(resumed["fold"]) == {0, 1, 2}


def test_survival_expert_carves_validation_when_val_equals_test(tmp_path):
    table = survival_cohort(tmp_path, n_patients=40)
    table.to_csv(tmp_path / "labels_surv.csv", index=False)
    write_split_files(tmp_path, "surv", table, 2, val_equals_test=True)
    with pytest.raises(SplitError, match="carve_val"):
        train_experts(make_config(tmp_path, ["tsurv"]), "tsurv", ENCODER)
    cfg = make_config(tmp_path, ["tsurv"], {"carve_val": True})
    df, meta = read_parquet(train_experts(cfg, "tsurv", ENCODER), "predictions")
    assert meta["classes"] is None and meta["n_bins"] == 4 and set(meta["bin_edges"]) == {"0", "1"}
    assert all(meta["folds"][f]["carve_val"] for f in ("0", "1"))
    assert (df["label"] == -1).all() and set(df["event"]) == {0, 1} and all(len(v) == 4 for v in df["logits"])
    val, test = (set(df.loc[(df["fold"] == 0) & (df["split"] == s), "sample_id"]) for s in ("val", "test"))
    assert val and not val & test
    assert score(cfg.task("tsurv"), df[df["split"] == "test"], bin_edges=meta["bin_edges"])["ibs"] < 0.3


def test_tile_expert_uses_the_official_split_and_writes_no_embedding(tmp_path):
    tile_dataset(tmp_path)
    cfg = make_config(tmp_path, ["ttile"])
    df, meta = read_parquet(train_experts(cfg, "ttile", ENCODER), "predictions")
    assert df.groupby(["split", "oof"]).size().to_dict() == {
        ("test", False): 60,
        ("train", False): 144,
        ("train", True): 144,
        ("val", False): 36,
    }
    assert df["embedding"].isna().all() and meta["bag_unit"] is None and meta["folds"]["0"]["flops"] > 0
    assert score(cfg.task("ttile"), df[df["split"] == "test"])["balanced_accuracy"] > 0.8


def test_missing_tile_features_name_the_file_and_how_to_rebuild_them(tmp_path):
    tile_dataset(tmp_path)
    cfg = make_config(tmp_path, ["ttile"])
    cfg.layout.tile_features(ENCODER, cfg.task("ttile").dataset).unlink()
    with pytest.raises(FileNotFoundError, match=rf"pathfuse embed-tiles --encoder {ENCODER}.*_tile_datasets.parquet"):
        train_experts(cfg, "ttile", ENCODER)


def test_a_class_missing_from_a_training_fold_fails_or_is_skipped(tmp_path):
    table = classification_cohort(tmp_path, ("a", "b", "c"), n_patients=24)
    table.to_csv(tmp_path / "labels_multi.csv", index=False)
    cases = np.array(sorted(table["case_id"].unique()))
    only_c = cases[2::3]  # patient p has class p % 3
    for k in range(2):
        test = only_c if k == 0 else cases[:6]
        rest = np.setdiff1d(cases, test)
        pd.DataFrame(
            {
                "train": list(rest[3:]),
                "val": list(rest[:3]) + [""] * (len(rest) - 6),
                "test": list(test) + [""] * (len(rest) - 3 - len(test)),
            }
        ).to_csv(tmp_path / f"splits_multi_{k}.csv", index=False)
    with pytest.raises(
        FoldError, match=r"task tmulti, encoder demo_vit_a, fold 0: class\(es\) \['c'\]"
    ):
        train_experts(make_config(tmp_path, ["tmulti"]), "tmulti", ENCODER)
    cfg = make_config(tmp_path, ["tmulti"], {"on_bad_input": "skip"})
    df, meta = read_parquet(train_experts(cfg, "tmulti", ENCODER), "predictions")
    assert set(df["fold"]) == {1} and "class(es) ['c']" in meta["skipped_folds"]["0"]


def test_bags_held_in_memory_give_the_same_predictions_as_bags_read_per_batch(tmp_path, binary_run, caplog):
    _, held, _, _ = binary_run
    classification_cohort(tmp_path, n_patients=30).to_csv(tmp_path / "labels_bin.csv", index=False)
    with caplog.at_level(logging.INFO, logger="pathfuse.experts"):
        streamed = train_experts(make_config(tmp_path, ["tbin"], {"features_in_memory_gib": 0}), "tbin", ENCODER)
    assert "reading the 30 bags from disk per batch" in caplog.text
    (a, meta_a), (b, meta_b) = read_parquet(held, "predictions"), read_parquet(streamed, "predictions")
    assert np.array_equal(np.stack(a["logits"]), np.stack(b["logits"]))
    assert meta_a["memory"]["features_held"] and not meta_b["memory"]["features_held"]
    assert meta_a["memory"]["features_gib"] > 0 and meta_b["memory"]["peak_rss_gib"] > 0

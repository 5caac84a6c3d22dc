"""fuse_task end to end: every method, every task kind, the predictions contract, honesty, re-runs."""

from __future__ import annotations

import logging
import os
import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from support.synthetic import TASK_OF_KIND, SyntheticTask, fast_fusion_settings, write_synthetic_task

from pathfuse.config import Config
from pathfuse.evaluation.metrics import score
from pathfuse.fusion.context import FusionInputError
from pathfuse.fusion.run import fuse_task
from pathfuse.io import read_parquet, read_parquet_meta, write_parquet
from pathfuse.reproducibility import file_sha256

METHODS = ["logitprod", "shazam", "best_val_expert", "oracle_expert", "mean_logits", "mean_probs", "stacking", "concat"]
FAMILY = {"logitprod": "fuser", "shazam": "fuser", "oracle_expert": "oracle"}
COLUMNS = ["fold", "split", "oof", "sample_id", "patient_id", "label", "time", "event", "logits", "embedding",
           "gate_weights"]


def _spec(kind: str) -> SyntheticTask:
    if kind == "tile_classification":
        return SyntheticTask(task=TASK_OF_KIND[kind], n_samples=80, n_folds=1)
    return SyntheticTask(task=TASK_OF_KIND[kind], n_samples=36, n_folds=2, tiles_per_slide=6)


def _run(root, kind: str):
    cfg = write_synthetic_task(root, _spec(kind), fast_fusion_settings())
    return cfg, fuse_task(cfg, TASK_OF_KIND[kind])


@pytest.fixture(scope="module", params=list(TASK_OF_KIND))
def fused(request, tmp_path_factory):
    kind = request.param
    cfg, paths = _run(tmp_path_factory.mktemp(kind), kind)
    return kind, cfg, paths


def _logits(paths) -> dict[str, pd.DataFrame]:
    out = {}
    for path in paths:
        df, _ = read_parquet(path, schema="predictions")
        out[path.parent.name] = df.sort_values(["fold", "split", "oof", "sample_id"]).reset_index(drop=True)
    return out


def test_every_method_writes_the_predictions_contract(fused):
    kind, cfg, paths = fused
    task = cfg.task(TASK_OF_KIND[kind])
    assert [p.parent.name for p in paths] == METHODS
    expert, _ = read_parquet(cfg.layout.expert_predictions(task.id, task.encoders[0]), schema="predictions")
    for path in paths:
        df, meta = read_parquet(path, schema="predictions")
        method = path.parent.name
        assert list(df.columns) == COLUMNS
        types = pq.read_schema(path)
        assert str(types.field("logits").type) == "list<element: float>"
        assert str(types.field("fold").type) == "int32" and str(types.field("event").type) == "int8"
        assert meta["family"] == FAMILY.get(method, "baseline") and meta["method"] == method
        assert meta["encoders"] == list(task.encoders) and meta["kind"] == kind
        n_out = task.n_bins if kind == "survival" else len(task.classes)
        assert {len(v) for v in df["logits"]} == {n_out}
        assert np.isfinite(np.stack(df["logits"])).all()
        for facts in meta["folds"].values():
            expected = {"train_seconds", "params", "flops", "best_epoch", "carve_val", "n_train", "n_val", "n_test"}
            assert expected <= set(facts)
            assert facts["train_seconds"] >= 0
        # the experts' test samples, exactly
        want = expert[expert["split"] == "test"].set_index(["fold", "sample_id"]).index.sort_values()
        got = df[df["split"] == "test"].set_index(["fold", "sample_id"]).index.sort_values()
        assert want.equals(got), method
        if method == "logitprod":
            groups = task.n_bins + 1 if kind == "survival" else 1
            weights = np.stack(df["gate_weights"]).reshape(len(df), groups, len(task.encoders))
            np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
            assert meta["folds"]["0"]["params"] == groups * len(task.encoders) * (3 * len(task.encoders) + 3)
        else:
            assert df["gate_weights"].isna().all()
        if kind == "survival":
            assert meta["n_bins"] == task.n_bins and set(meta["bin_edges"]) == set(meta["folds"])
        else:
            np.testing.assert_allclose(_softmax_sums(df), 1.0, atol=1e-5)


def _softmax_sums(df: pd.DataFrame) -> np.ndarray:
    z = np.stack(df["logits"]).astype(np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    return (p / p.sum(1, keepdims=True)).sum(1)


def test_outputs_score_like_experts(fused):
    kind, cfg, paths = fused
    task = cfg.task(TASK_OF_KIND[kind])
    for path in paths:
        df, _ = read_parquet(path, schema="predictions")
        values = score(task, df[df["split"] == "test"], metrics=[task.primary_metric])
        assert np.isfinite(values[task.primary_metric]), path


def test_rerun_keeps_finished_methods_and_redoes_missing_ones(tmp_path):
    task = TASK_OF_KIND["mutation"]
    settings = {**fast_fusion_settings(), "methods": ["logitprod", "mean_logits", "stacking"]}
    cfg = write_synthetic_task(tmp_path, SyntheticTask(task=task, n_samples=30, n_folds=2), settings,
                               with_features=False)
    paths = fuse_task(cfg, task)
    before = {p: p.stat().st_mtime_ns for p in paths}
    paths[0].unlink()
    assert fuse_task(cfg, task) == paths
    assert paths[0].exists()
    assert all(p.stat().st_mtime_ns == before[p] for p in paths[1:])
    changed = Config.from_dict({**cfg.raw, "fusion": {**settings, "stacking": {"C": 0.5}}})
    fuse_task(changed, task)  # a changed setting redoes that method only
    assert paths[2].stat().st_mtime_ns != before[paths[2]] and paths[1].stat().st_mtime_ns == before[paths[1]]
    manifest, meta = read_parquet(cfg.layout.fusion_manifest(task), schema="fusion_manifest")
    assert list(manifest["method"]) == settings["methods"] and meta["task"] == task
    assert [cfg.layout.fusion_manifest(task).parent / p for p in manifest["path"]] == paths
    for path, sha, digest in zip(paths, manifest["sha256"], manifest["digest"], strict=True):
        assert sha == file_sha256(path) and digest == read_parquet_meta(path, schema="predictions")["digest"]


def test_a_copy_with_whole_second_mtimes_keeps_every_method(tmp_path, caplog):
    """A results folder copied back with whole-second modification times refits nothing.

    The method digests read the expert files' content, not their size and mtime (some copy tools
    and file systems keep seconds only).
    """
    task = TASK_OF_KIND["mutation"]
    settings = {**fast_fusion_settings(), "methods": ["logitprod", "mean_logits", "best_val_expert"]}
    cfg = write_synthetic_task(tmp_path, SyntheticTask(task=task, n_samples=30, n_folds=2), settings,
                               with_features=False)
    paths = fuse_task(cfg, task)
    results = tmp_path / "results"
    shutil.copytree(results, tmp_path / "copy")
    shutil.rmtree(results)
    shutil.copytree(tmp_path / "copy", results)
    for path in results.rglob("*.parquet"):
        mtime = path.stat().st_mtime_ns // 10**9 * 10**9
        os.utime(path, ns=(mtime, mtime))
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in paths}
    manifest = cfg.layout.fusion_manifest(task).read_bytes()
    with caplog.at_level(logging.INFO, logger="pathfuse.fusion.run"):
        assert fuse_task(cfg, task) == paths
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in paths} == before
    assert cfg.layout.fusion_manifest(task).read_bytes() == manifest  # the same bytes: nothing downstream reruns
    assert f"task {task}: up to date, kept: logitprod, mean_logits, best_val_expert" in caplog.text
    assert "to fit" not in caplog.text


def test_deterministic(tmp_path):
    """Two runs from the same seed give bit-identical predictions (slide kinds: see the next test)."""
    first, second = (_logits(_run(tmp_path / name, "tile_classification")[1]) for name in ("a", "b"))
    for method in METHODS:
        np.testing.assert_array_equal(
            np.stack(first[method]["logits"]), np.stack(second[method]["logits"]), err_msg=method
        )


def _corrupt_test_targets(cfg, task_id: str) -> None:
    """Scramble the test rows' labels (or times and events) in every expert file and the label table."""
    task = cfg.task(task_id)
    test_ids = set()
    for enc in task.encoders:
        path = cfg.layout.expert_predictions(task_id, enc)
        df, meta = read_parquet(path, schema="predictions")
        rows = df["split"] == "test"
        test_ids |= set(df.loc[rows, "sample_id"])
        if task.kind == "survival":
            df.loc[rows, "time"] = df.loc[rows, "time"][::-1].to_numpy() * 3.0
            df.loc[rows, "event"] = (1 - df.loc[rows, "event"]).astype(np.int8)
        else:
            df.loc[rows, "label"] = (df.loc[rows, "label"] + 1) % len(task.classes)
        write_parquet(df, path, schema="predictions", meta=meta)
    table = pd.read_csv(task.labels)
    rows = table["slide_id"].isin(test_ids)
    if task.kind == "survival":
        table.loc[rows, task.censorship_column] = 1 - table.loc[rows, task.censorship_column]
    else:
        table.loc[rows, task.label_column] = table.loc[rows, task.label_column].map(
            lambda v: task.classes[(list(task.classes).index(v) + 1) % len(task.classes)])
    table.to_csv(task.labels, index=False)


@pytest.mark.parametrize("kind", ["wsi_classification", "survival"])
def test_test_labels_never_influence_training(tmp_path, kind):
    """Scrambling every test label leaves every honest method's predictions unchanged.

    The two runs are independent (own folders), so this also shows the slide kinds are deterministic.
    """
    _, clean = _run(tmp_path / "clean", kind)
    cfg = write_synthetic_task(tmp_path / "scrambled", _spec(kind), fast_fusion_settings())
    _corrupt_test_targets(cfg, TASK_OF_KIND[kind])
    scrambled = fuse_task(cfg, TASK_OF_KIND[kind])
    first, second = _logits(clean), _logits(scrambled)
    target = "time" if kind == "survival" else "label"
    assert not first["mean_logits"][target].equals(second["mean_logits"][target])  # the scrambling took effect
    for method in METHODS:
        if method == "oracle_expert":
            continue  # chosen on test by definition (reported as family "oracle")
        np.testing.assert_array_equal(np.stack(first[method]["logits"]), np.stack(second[method]["logits"]),
                                      err_msg=method)


def test_missing_or_inconsistent_experts_fail_clearly(tmp_path):
    task = TASK_OF_KIND["mutation"]
    cfg = write_synthetic_task(tmp_path, SyntheticTask(task=task, n_samples=20, n_folds=2), with_features=False)
    second = cfg.layout.expert_predictions(task, cfg.task(task).encoders[1])
    df, meta = read_parquet(second, schema="predictions")
    write_parquet(df[df["fold"] == 0], second, schema="predictions", meta=meta)
    with pytest.raises(FusionInputError, match="folds"):
        fuse_task(cfg, task)
    shutil.rmtree(second.parent)
    with pytest.raises(FileNotFoundError, match="teacher1"):
        fuse_task(cfg, task)
    assert not cfg.layout.fusion_predictions(task, "logitprod").exists()

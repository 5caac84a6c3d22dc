"""Real expert, fuse and evaluate jobs (``pathfuse <stage> --log``) write progress lines to their log file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from support.reduced_demo import REPO
from support.synthetic import SyntheticTask, fast_fusion_settings, write_synthetic_task
from support.synthetic_experts import ENCODER, classification_cohort, make_config

from pathfuse import progress
from pathfuse.training import fit

NUMBER = r"-?[\d.]+(?:e-?\d+)?"
DURATION = r"\d+(?:s|m\d\ds|h\d\dm)"


def run_job(tmp_path: Path, raw: dict, *stage: str) -> str:
    """Run one stage as its rule does (own process, ``--log``) with a line at every step; return the log."""
    config, log = tmp_path / "config.yaml", tmp_path / f"{stage[0]}.log"
    config.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "pathfuse.cli", *stage, "--config", str(config), "--log", str(log),
                    "--set", "logging.progress_interval_s=0"], env=env, check=True, timeout=600)
    return log.read_text()


def test_expert_job_logs_its_head_bank_epochs_batches_values_and_etas(tmp_path):
    classification_cohort(tmp_path, n_patients=30).to_csv(tmp_path / "labels_bin.csv", index=False)
    raw = make_config(tmp_path, ["tbin"], experts={"inner_folds": 2}, epochs=2).raw
    text = run_job(tmp_path, raw, "train-experts", "--task", "tbin", "--encoder", ENCODER)
    job = f"job: task tbin, encoder {ENCODER}, folds 3 to train, 0 resumed"
    assert f"job started: task tbin, encoder {ENCODER}" in text
    # One head bank trains the 3 folds' outer and 2 inner models each: 9 heads, an epoch per step.
    assert re.search(rf"{job} \| head bank: heads 9, epoch 1/2, training 9 heads, batch 1/2 \| "
                     rf"ETA head bank {DURATION}, job {DURATION}\n", text)
    assert re.search(rf"head bank epoch 2/2: \d of 9 heads training; best validation loss: fold0.outer {NUMBER}, "
                     rf"fold0.inner0 {NUMBER}", text)
    assert re.search(rf"{job} \| head bank done in {DURATION}: heads 9, epoch 2/2", text)
    assert re.search(rf"job done in {DURATION}: task tbin", text)


def test_fuse_and_evaluate_jobs_log_method_fold_epoch_and_bootstrap_progress(tmp_path):
    settings = {**fast_fusion_settings(), "methods": ["logitprod", "shazam", "mean_logits"]}
    spec = SyntheticTask(task="bracs_3", n_samples=36, n_folds=2, tiles_per_slide=6)
    raw = write_synthetic_task(tmp_path, spec, settings).raw
    raw["report"] = {**raw["report"], "n_bootstrap": 20}
    fuse = run_job(tmp_path, raw, "fuse", "--task", "bracs_3")
    assert re.search(rf"job: task bracs_3, method 1/3 \| logitprod: fold 2/2 \| gate training: epoch \d+/30, "
                     rf"val_\w+ {NUMBER}, best {NUMBER} @ epoch \d+ \| ETA gate training ≤ {DURATION}, "
                     rf"logitprod {DURATION}, job {DURATION}\n", fuse)
    assert re.search(rf"job: task bracs_3, method 2/3 \| shazam: fold 1/2 \| training: epoch 2/3, train_loss "
                     rf"{NUMBER}, val_loss {NUMBER}, val_\S+ {NUMBER}, best .* \| ETA training ≤ {DURATION}, "
                     rf"shazam {DURATION}, job {DURATION}\n", fuse)
    assert re.search(rf"job: task bracs_3, method 3/3 \| mean_logits done in {DURATION}: fold 2/2 \| ETA job", fuse)
    evaluate = run_job(tmp_path, raw, "evaluate", "--task", "bracs_3")
    assert re.search(rf"job: task bracs_3, fold 2/2, method shazam \(\d/\d\), resample 7/20 \| ETA job {DURATION}\n",
                     evaluate)
    assert re.search(r"job: task bracs_3, fold pooled, method mean_logits \(\d/\d\), resample 20/20 \| ETA", evaluate)
    assert re.search(rf"job done in {DURATION}: task bracs_3", evaluate)


@pytest.mark.usefixtures("one_thread")
def test_fit_reports_each_epoch_with_its_values_into_the_open_unit(caplog):
    caplog.set_level("INFO", logger="pathfuse.progress")
    x, y = torch.randn(12, 3), torch.tensor([0, 1] * 6)
    batches = [{"inputs": {"input": x[i:i + 4]}, "label": y[i:i + 4]} for i in range(0, 12, 4)]
    model = torch.nn.Linear(3, 2)

    def loss(out, batch):
        return torch.nn.functional.cross_entropy(out, batch["label"])

    with progress.scope("heads", 1, interval=0, clock=lambda: 0.0, head="linear"):  # a line at every batch
        fit(model, batches, batches[:1], loss, epochs=2, lr=0.01, patience=5)
    lines = [r.getMessage() for r in caplog.records if r.name == "pathfuse.progress"]
    assert lines[:3] == ["heads started: head linear", "heads: head linear | training started",
                         "heads: head linear | training: epoch 1/2, batch 1/3 | ETA training ≤ 0s, heads 0s"]
    epochs = [line.split(" | ")[1] for line in lines if "batch" not in line and "train_loss" in line]
    assert [line.split(", train_loss")[0] for line in epochs] == [
        "training: epoch 1/2", "training: epoch 2/2", "training done in 0s: epoch 2/2"]
    assert re.fullmatch(rf"training: epoch 2/2, train_loss {NUMBER}, val_loss {NUMBER}, best {NUMBER} @ epoch [12]",
                        epochs[1])

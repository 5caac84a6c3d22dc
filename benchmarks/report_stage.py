"""Benchmark of Stage 3: how long `evaluate` (per task) and `report` (per run) take.

Evaluation cost is dominated by the bootstrap (every metric recomputed per resample, pooled
CIs + paired tests per method), so it is measured per method and per 1000 resamples on
synthetic prediction files of contract shape: a binary slide task (5 folds) and a 9-class
tile task (1 split), with 3 experts and 6 fusion methods. The report is measured on a
synthetic 22-task run. Writes benchmarks/results/report_stage.json.

Run: python benchmarks/report_stage.py [--n-bootstrap 200] [--test-per-fold 60]
(The synthetic prediction writer is the tests' own, tests/support/evaluation.py.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import support.evaluation as synth

from pathfuse.config import load_yaml
from pathfuse.evaluation.run import evaluate_task
from pathfuse.io import write_json
from pathfuse.report.run import build_report

METHODS = ["logitprod", "shazam", "best_val_expert", "mean_logits", "mean_probs", "stacking"]


def _write(cfg, task: str) -> None:
    strengths = {e: 0.5 + i for i, e in enumerate(synth.ENCODERS)}
    strengths.update(dict.fromkeys(METHODS, 2.0))
    synth.write_task(cfg, task, strengths)


def time_evaluate(root: Path, task: str, n_folds: int, n_bootstrap: int) -> dict:
    cfg = synth.make_config(root, [task], methods=METHODS, n_folds=n_folds, n_bootstrap=n_bootstrap)
    _write(cfg, task)
    start = time.perf_counter()
    evaluate_task(cfg, task)
    seconds = time.perf_counter() - start
    n_methods = len(synth.ENCODERS) + len(METHODS)
    spec = cfg.task(task)
    return {
        "task": task, "kind": spec.kind, "classes": spec.n_outputs, "folds": spec.n_folds,
        "test_samples_pooled": synth.SPLIT_SIZES["test"] * spec.n_folds, "methods": n_methods,
        "metrics": list(spec.metrics), "n_bootstrap": n_bootstrap, "seconds": round(seconds, 2),
        "seconds_per_method_per_1000_resamples": round(seconds / n_methods * 1000 / n_bootstrap, 2),
    }


def time_report(root: Path) -> dict:
    tasks = [t for t, v in load_yaml(REPO / "src" / "pathfuse" / "resources" / "tasks.yaml").items() if v.get("lp22")]
    cfg = synth.make_config(root, tasks, methods=METHODS, n_bootstrap=10)
    for task in tasks:
        _write(cfg, task)
        evaluate_task(cfg, task)
    start = time.perf_counter()
    written = build_report(cfg)
    return {"tasks": len(tasks), "methods": len(synth.ENCODERS) + len(METHODS), "files": len(written),
            "seconds": round(time.perf_counter() - start, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-bootstrap", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        evaluate = [time_evaluate(Path(tmp) / "a", "brca_idc_ilc", 5, args.n_bootstrap),
                    time_evaluate(Path(tmp) / "b", "crc100k", 1, args.n_bootstrap),
                    time_evaluate(Path(tmp) / "c", "surv_brca", 5, args.n_bootstrap)]
        report = time_report(Path(tmp) / "d")
    result = {
        "benchmark": "report_stage",
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "evaluate": evaluate, "report": report,
    }
    out = write_json(result, REPO / "benchmarks" / "results" / "report_stage.json")
    print(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

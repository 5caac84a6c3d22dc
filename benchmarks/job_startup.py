"""Start-up cost of a training job's first optimiser step → benchmarks/results/job_startup.json.

Why: a pathfuse run starts one short Python process per expert (66 in the demo) and per fuse
job. torch.optim's first optimiser imports ``torch._dynamo`` (its ``__init__`` and ``step`` are
wrapped to disable compilation), seconds that such a job spends before its first real update.
:mod:`pathfuse.optimizers` computes the same updates without it (tests/test_optimizers.py checks
bit-identity). Each variant runs ``--repeats`` times in a fresh interpreter: ``import torch``,
build a small head, one backward pass, one optimiser step, timed from process start.

    python benchmarks/job_startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).parent / "results" / "job_startup.json"

PROGRAM = """
import time
start = time.perf_counter()
import sys, torch
imported = time.perf_counter()
model = torch.nn.Sequential(torch.nn.Linear(384, 128), torch.nn.GELU(), torch.nn.Linear(128, 4))
{build}
model(torch.randn(16, 384)).sum().backward()
opt.step()
done = time.perf_counter()
print(imported - start, done - imported, 'torch._dynamo' in sys.modules)
"""

VARIANTS = {
    "torch.optim.Adam": "opt = torch.optim.Adam(model.parameters(), lr=1e-3)",
    "pathfuse.optimizers.Adam": "from pathfuse.optimizers import Adam\nopt = Adam(model.parameters(), lr=1e-3)",
}


def run(build: str) -> tuple[float, float, bool]:
    """One fresh interpreter: (seconds to import torch, seconds to the first step, dynamo imported)."""
    out = subprocess.run([sys.executable, "-c", PROGRAM.format(build=build)], capture_output=True, text=True,
                         check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    imported, first_step, dynamo = out.stdout.split()
    return float(imported), float(first_step), dynamo == "True"


def main() -> None:
    """Time every variant and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    results = {}
    for name, build in VARIANTS.items():
        runs = [run(build) for _ in range(args.repeats)]
        results[name] = {
            "import_torch_s_median": statistics.median(r[0] for r in runs),
            "to_first_step_s_median": statistics.median(r[1] for r in runs),
            "imports_dynamo": runs[0][2],
        }
    saved = (results["torch.optim.Adam"]["to_first_step_s_median"]
             - results["pathfuse.optimizers.Adam"]["to_first_step_s_median"])
    record = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "load_avg_1min": os.getloadavg()[0]},
        "repeats": args.repeats,
        "variants": results,
        "saved_per_training_job_s": saved,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()

"""The fusion-method seam: a lab's own method runs, validates and is scored without library edits.

The toy method lives in this file (a real one lives in the lab's package) and is registered
like a plug-in: through :data:`pathfuse.fusion.FUSERS`, or through the entry-point group
``pathfuse.fusers`` of an installed distribution. docs/architecture.md, "Extending pathfuse:
the files you touch", points here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from scipy.special import log_softmax
from support.synthetic import TASK_OF_KIND, SyntheticTask, write_synthetic_task

from pathfuse import resources
from pathfuse.config import Config, ConfigError, load_yaml, section_settings
from pathfuse.evaluation.run import evaluate_task
from pathfuse.fusion import FUSERS, FoldOutput, Method
from pathfuse.fusion.context import FusionContext
from pathfuse.fusion.run import fuse_task
from pathfuse.io import read_parquet
from pathfuse.settings import FusionSettings

TOY = "toy_weighted_log_probs"
WEIGHTS = (0.5, 0.5, 0.0)
TASK = TASK_OF_KIND["mutation"]


# ----------------------------------------------------------------------------- the plug-in, test-local
def weighted_log_probs(ctx: FusionContext, fold: int, weights: tuple[float, ...]) -> FoldOutput:
    """Σ_m w_m · log softmax(z_m): a fixed-weight geometric pool of the experts (class tasks).

    The fold-function contract: every block of ``fold`` in, [N, K] logits per block out, in the
    block's row order, plus the cost facts the report's cost table reads.
    """
    start = time.perf_counter()
    w = np.asarray(weights, dtype=np.float64)[None, :, None]
    logits = {key: (log_softmax(block.logits.astype(np.float64), axis=-1) * w).sum(1).astype(np.float32)
              for key, block in ctx.blocks[fold].items()}
    cost = {"train_seconds": time.perf_counter() - start, "params": 0, "flops": None, "best_epoch": None}
    return FoldOutput(logits=logits, cost=cost)


@pytest.fixture
def toy_method(monkeypatch) -> str:
    monkeypatch.setattr(FUSERS, "_items", dict(FUSERS._items))  # the registration ends with the test
    FUSERS.register(TOY)(Method("baseline", f"{__name__}:weighted_log_probs", options={"weights": WEIGHTS},
                                description="fixed-weight mean of the experts' log-probabilities (toy)"))
    return TOY


# ----------------------------------------------------------------------------- schema and validation
def test_schema_enum_documents_the_built_in_methods():
    """The packaged enum lists exactly the built-ins; validation takes the registry's names."""
    enum = load_yaml(resources.schema("sections/fusion"))["properties"]["methods"]["items"]["enum"]
    built_in = {name for name in FUSERS.names() if FUSERS.get(name).target.startswith("pathfuse.fusion.")}
    assert set(enum) == built_in


def test_config_validation_accepts_a_registered_method_only(toy_method):
    assert section_settings(FusionSettings, methods=[toy_method, "mean_logits"]).methods == (toy_method, "mean_logits")
    del FUSERS._items[toy_method]
    with pytest.raises(ConfigError, match=f"'{toy_method}' is not allowed"):
        section_settings(FusionSettings, methods=[toy_method])


# ----------------------------------------------------------------------------- fuse and evaluate
def test_a_toy_method_is_fused_and_scored_like_the_built_ins(toy_method, tmp_path):
    fusion = {"methods": [toy_method, "mean_logits"]}
    cfg = write_synthetic_task(tmp_path, SyntheticTask(task=TASK, n_samples=30, n_folds=2), fusion,
                               with_features=False)
    assert isinstance(cfg, Config) and cfg.fusion_methods == [toy_method, "mean_logits"]

    paths = fuse_task(cfg, TASK)
    assert [p.parent.name for p in paths] == [toy_method, "mean_logits"]
    fused, meta = read_parquet(paths[0], schema="predictions")
    assert meta["method"] == toy_method and meta["family"] == "baseline"
    assert meta["encoders"] == list(cfg.task(TASK).encoders)

    experts = [read_parquet(cfg.layout.expert_predictions(TASK, enc), schema="predictions")[0]
               for enc in cfg.task(TASK).encoders]
    keys = ["fold", "split", "oof", "sample_id"]
    test = fused[fused["split"] == "test"].sort_values(keys)
    want = sum(
        w * log_softmax(np.stack(e[e["split"] == "test"].sort_values(keys)["logits"]).astype(np.float64), axis=-1)
        for w, e in zip(WEIGHTS, experts, strict=True)
    )
    np.testing.assert_allclose(np.stack(test["logits"]), want, rtol=1e-5, atol=1e-5)

    scores, _ = read_parquet(evaluate_task(cfg, TASK), schema="metrics")
    mine = scores[(scores["method"] == toy_method) & (scores["split"] == "test")]
    assert set(mine["family"]) == {"baseline"}
    assert np.isfinite(mine[mine["metric"] == "auroc"]["value"]).all() and len(mine[mine["metric"] == "auroc"])


# ----------------------------------------------------------------------------- an installed plug-in
PLUGIN = '''
"""A lab's fusion method, as its own package would ship it."""
from pathfuse.fusion import Method

PICK_FIRST = Method("baseline", "toy_fusers_impl:first_expert", description="expert 0, unchanged (toy)")
'''

PLUGIN_IMPL = '''
from pathfuse.fusion import FoldOutput

def first_expert(ctx, fold):
    return FoldOutput({key: block.logits[:, 0] for key, block in ctx.blocks[fold].items()},
                      {"train_seconds": 0.0, "params": 0, "flops": None, "best_epoch": None})
'''

CHECK = '''
import sys
from pathfuse.config import section_settings
from pathfuse.fusion import FUSERS
from pathfuse.settings import FusionSettings

assert FUSERS.get("toy_pick_first").target == "toy_fusers_impl:first_expert"
assert "toy_fusers_impl" not in sys.modules  # the fold function loads on first use only
assert section_settings(FusionSettings, methods=["toy_pick_first"]).methods == ("toy_pick_first",)
FUSERS.get("toy_pick_first").fit_fold
assert "toy_fusers_impl" in sys.modules
'''


def test_an_installed_entry_point_registers_and_validates(tmp_path):
    """What ``[project.entry-points."pathfuse.fusers"] toy_pick_first = "toy_fusers:PICK_FIRST"`` installs."""
    (tmp_path / "toy_fusers.py").write_text(PLUGIN)
    (tmp_path / "toy_fusers_impl.py").write_text(PLUGIN_IMPL)
    dist = tmp_path / "toy_fusers-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-fusers\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[pathfuse.fusers]\ntoy_pick_first = toy_fusers:PICK_FIRST\n")
    env_path = f"{tmp_path}:{':'.join(p for p in sys.path if p)}"
    env = {**os.environ, "PYTHONPATH": env_path}
    subprocess.run([sys.executable, "-c", textwrap.dedent(CHECK)], check=True, env=env)

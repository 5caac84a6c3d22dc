"""Task kinds: the registry matches the schema, the built-ins keep their numbers, a new kind plugs in."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml

from pathfuse import resources
from pathfuse.config import SLIDE_KINDS, Config, ConfigError, TaskSpec, load_yaml
from pathfuse.evaluation import metrics, units
from pathfuse.fusion.blocks import Block
from pathfuse.fusion.fitting import TensorBatches, block_targets, task_loss
from pathfuse.heads import build_head
from pathfuse.heads.kind_training import auroc_monitor, c_index_monitor
from pathfuse.heads.objectives import Objective, monitor_fn
from pathfuse.kinds import KINDS, TaskKind, get_kind, register_plugins
from pathfuse.training import fit

BUILT_IN = {name for name in KINDS.names() if KINDS.get(name).__module__.startswith("pathfuse.kinds")}


# ----------------------------------------------------------------------------- registry and schema
def test_schema_kind_enum_is_the_registry():
    """The packaged tasks schema documents exactly the built-in kinds (validation takes the registry's)."""
    entry = load_yaml(resources.schema("tasks"))["additionalProperties"]
    assert set(entry["properties"]["kind"]["enum"]) == BUILT_IN
    for rule in entry["allOf"]:  # the per-kind required keys name registered kinds only
        condition = rule["if"]["properties"]["kind"]
        assert set(condition.get("enum", [condition.get("const")])) <= BUILT_IN


def test_built_in_kinds_answer_what_the_old_branches_did():
    assert {"wsi_classification", "mutation", "survival", "tile_classification"} == BUILT_IN
    assert set(SLIDE_KINDS) == {"wsi_classification", "mutation", "survival"}
    survival, tiles = get_kind("survival"), get_kind("tile_classification")
    assert survival.metrics == ("c_index", "ibs") and tiles.metrics == metrics.CLASSIFICATION_METRICS
    assert survival.stratify_by == "event" and tiles.stratify_by == "label"
    assert survival.time_to_event and not survival.has_classes and tiles.has_classes and not tiles.slide
    with pytest.raises(KeyError, match="unknown task kind 'nope'; known: mutation, survival"):
        get_kind("nope")


def test_row_and_unit_scores_are_those_metrics_computes():
    logits = np.random.default_rng(0).normal(size=(6, 4)) * 3
    softmax = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_array_equal(get_kind("mutation").row_scores(logits), softmax / softmax.sum(axis=1, keepdims=True))
    preds = pd.DataFrame({"patient_id": [f"p{i}" for i in range(6)], "time": np.arange(6.0) + 1,
                          "event": [1, 0, 1, 1, 0, 1], "fold": 0, "logits": list(logits)})
    survival = get_kind("survival")
    aggregated = units.aggregate(TaskSpec(id="t", kind="survival", description=""), preds, None, False)
    np.testing.assert_array_equal(survival.unit_scores(survival.row_scores(logits)), aggregated.risk)


def test_config_stays_torch_free():
    """The config module (Snakefile start-up, the slides env) imports the kinds; their torch side loads lazily."""
    code = "import sys, pathfuse.config; assert 'torch' not in sys.modules and 'pathfuse.heads' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_entry_point_plugins_register(monkeypatch):
    plugin = SimpleNamespace(name="toy_plugin", load=lambda: ToyOrdinal)  # what an installed package declares
    monkeypatch.setattr("pathfuse.kinds.entry_points", lambda group: [plugin] if group == "pathfuse.kinds" else [])
    monkeypatch.setattr(KINDS, "_items", dict(KINDS._items))  # restored after the test
    register_plugins()
    assert KINDS.get("toy_plugin") is ToyOrdinal


# ----------------------------------------------------------------------------- a new kind, test-local
class ToyOrdinalTraining:
    """Cumulative-link ordinal regression: K−1 logits z_k = logit P(y > k), binary cross-entropies."""

    def targets(self, samples: pd.DataFrame, edges: np.ndarray | None = None) -> dict[str, np.ndarray]:
        return {"label": samples["label"].to_numpy(np.int64)}

    def block_targets(self, block: Block) -> dict[str, torch.Tensor]:
        return {"label": torch.as_tensor(block.label, dtype=torch.long)}

    def loss(self, alpha: float = 0.4, class_weights: torch.Tensor | None = None):
        def cumulative_bce(out: torch.Tensor, batch) -> torch.Tensor:
            above = (batch["label"].unsqueeze(1) > torch.arange(out.shape[1])).float()
            return F.binary_cross_entropy_with_logits(out, above)

        return cumulative_bce

    def monitor(self, name: str):
        raise KeyError(name)

    def log_distribution(self, logits: torch.Tensor) -> torch.Tensor:
        above = torch.sigmoid(logits)
        padded = torch.cat([torch.ones_like(above[..., :1]), above, torch.zeros_like(above[..., :1])], dim=-1)
        mass = (padded[..., :-1] - padded[..., 1:]).clamp_min(1e-12)  # unconstrained z_k may cross
        return (mass / mass.sum(-1, keepdim=True)).log()

    def output_logits(self, log_q: torch.Tensor) -> torch.Tensor:
        above = 1 - log_q.exp().cumsum(-1)[..., :-1]
        return torch.logit(above.clamp(1e-6, 1 - 1e-6))


class ToyOrdinal(TaskKind):
    """Ordered tile classes (e.g. a grade), K−1 cumulative logits; scored like classes."""

    slide = False
    metrics = ("balanced_accuracy", "macro_f1")
    training_rules = ToyOrdinalTraining

    def n_outputs(self, task) -> int:
        return len(task.classes) - 1

    def label_columns(self, task) -> list[str]:
        return [str(task.label_column)]

    def row_scores(self, logits: np.ndarray) -> np.ndarray:
        return np.exp(self.training().log_distribution(torch.as_tensor(logits)).numpy())


@pytest.fixture
def toy_kind(monkeypatch):
    monkeypatch.setattr(KINDS, "_items", dict(KINDS._items))  # the registration ends with the test
    KINDS.register("toy_ordinal")(ToyOrdinal)
    return "toy_ordinal"


@pytest.fixture
def toy_config(toy_kind, demo_raw, tmp_path) -> Config:
    """The demo config with a custom tasks registry holding one task of the toy kind."""
    registry = load_yaml(resources.registry("tasks"))
    registry["toy_grade"] = {"kind": toy_kind, "dataset": "crc100k", "classes": ["G1", "G2", "G3", "G4"],
                             "split": {"source": "official"}, "metrics": list(ToyOrdinal.metrics),
                             "primary_metric": "balanced_accuracy", "lp22": False}
    path = tmp_path / "tasks.yaml"
    path.write_text(yaml.safe_dump(registry))
    raw = dict(demo_raw, tasks=["toy_grade"], registries={"tasks": str(path)},
               task_data={"toy_grade": {"dataset": "demo_crc100k"}})
    return Config.from_dict(raw)


def test_a_custom_registry_may_name_a_registered_kind_only(toy_config, demo_raw, tmp_path):
    task = toy_config.task("toy_grade")
    assert task.kind_strategy.__class__ is ToyOrdinal
    assert task.n_outputs == 3 and not task.is_slide_task and task.dataset == "demo_crc100k"
    del KINDS._items["toy_ordinal"]
    with pytest.raises(ConfigError, match="'toy_ordinal' is not allowed"):
        Config(toy_config.raw).task_registry  # noqa: B018


def test_the_toy_kind_trains_through_the_heads_and_fusion_code(toy_config):
    task = toy_config.task("toy_grade")
    kind = task.kind_strategy
    labels = np.array([0, 1, 2, 3, 3, 2, 1, 0])
    samples = pd.DataFrame({"label": labels, "time": np.nan, "event": 0})

    objective = Objective(task.kind)  # the experts' path
    targets = {k: torch.as_tensor(v) for k, v in objective.targets(samples).items()}
    logits = torch.zeros(len(labels), task.n_outputs)
    assert objective.loss()(logits, targets).item() == pytest.approx(np.log(2))  # every cumulative logit at 0.5

    block = Block(sample_id=np.arange(8).astype(str).astype(object), patient_id=np.arange(8).astype(str),
                  label=labels, time=np.zeros(8), event=np.zeros(8, np.int8),
                  logits=np.zeros((8, 1, task.n_outputs), np.float32))
    x = torch.as_tensor(np.eye(4)[labels], dtype=torch.float32)
    batches = TensorBatches({"x": x}, block_targets(block, kind), batch_size=4, shuffle=True, seed=0)
    model = build_head("mlp", in_dim=4, n_outputs=task.n_outputs)
    result = fit(model, batches, batches, task_loss(kind, 0.4), epochs=60, lr=0.05, weight_decay=0.0,
                 patience=60, seed=0, forward=lambda m, b: m(b["inputs"]["x"]))
    assert result.curve["val_loss"].iloc[-1] < result.curve["val_loss"].iloc[0]
    with torch.no_grad():
        probs = kind.row_scores(model(x).numpy())
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    assert set(kind.metrics) <= set(metrics.CLASSIFICATION_METRICS) and (probs.argmax(1) == labels).mean() > 0.5


def test_monitors_by_kind():
    assert monitor_fn("c_index", "survival") is c_index_monitor
    assert monitor_fn("auroc", "tile_classification") is monitor_fn("auroc", "mutation") is auroc_monitor
    with pytest.raises(KeyError, match="unknown validation monitor 'c_index'; known: loss, auroc"):
        monitor_fn("c_index", "mutation")

"""What a trained expert checks before it predicts another cohort's features (pathfuse.external.experts)."""

from __future__ import annotations

import pytest

from pathfuse.config import TaskSpec
from pathfuse.external.experts import ExternalError, check_features

TASK = TaskSpec(id="brca_idc_ilc", kind="wsi_classification", description="")
TRAINED = {"encoder": "uni", "weights_sha256": "aa11", "dim": 1024}


def test_features_of_the_same_encoder_weights_and_width_are_accepted():
    check_features(TASK, "uni", "cptac", TRAINED, dict(TRAINED))


@pytest.mark.parametrize(("key", "value"), [("weights_sha256", "bb22"), ("dim", 768), ("encoder", "virchow")])
def test_features_of_another_encoder_version_are_refused_with_the_reason(key, value):
    with pytest.raises(ExternalError, match=f"its features have {key} {value!r}, the expert was trained on"):
        check_features(TASK, "uni", "cptac", TRAINED, {**TRAINED, key: value})


def test_a_model_without_a_recorded_feature_identity_is_refused():
    with pytest.raises(ExternalError, match="record no feature identity"):
        check_features(TASK, "uni", "cptac", None, TRAINED)


def test_an_external_cohort_of_a_tile_task_is_refused_by_name():
    from pathfuse import resources
    from pathfuse.config import Config, ConfigError
    from pathfuse.plan.external import external_cohorts

    cfg = Config.from_file(resources.demo_config())
    assert external_cohorts(cfg) == [("brca_idc_ilc", "demo_ext", True)]  # the demo's own
    raw = dict(cfg.raw)
    raw["task_data"]["crc100k"]["external"] = [{"cohort": "demo_ext"}]
    with pytest.raises(ConfigError, match=r"task_data\.crc100k\.external: external cohorts are for slide tasks"):
        external_cohorts(Config.from_dict(raw))
